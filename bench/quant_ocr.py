"""INT8 for PP-OCR, measured: per model FP32 vs INT8 latency (1 and N threads), ratio, metric, decision.

    python bench/quant_ocr.py [BUNDLE] [--images DIR] [--threads 2] [--work DIR]

Without BUNDLE, the PP-OCR exports in ../shared/models/PP-OCR are exported to ONNX and repaired with
the converter's own first passes (the FP32 graph a conversion starts from). With BUNDLE, its FP32
ONNX artifacts are used (det/cls/rec + dictionary). Each FP32 model then goes through the optimize
and quantize passes exactly as a conversion runs them; the table shows what the quantize pass
measured and decided, and the notes compare the optimised FP32 graph with the one it started from.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtimes.bundle import Bundle  # noqa: E402

from converters.families import family_for  # noqa: E402
from converters.latency import compare  # noqa: E402
from converters.passes.base import ModelFile, PassContext, Target  # noqa: E402
from converters.passes.optimize import OptimizePass  # noqa: E402
from converters.passes.quantize import LATENCY_FEEDS, QuantizePass, thread_counts  # noqa: E402
from converters.spec import ModelSpec  # noqa: E402

SHARED = ROOT.parent / "shared"
OCR_EXPORTS = ("ch_PP-OCRv4_det", "ch_ppocr_mobile_v2_cls", "ch_PP-OCRv4_rec")
OCR_IMAGES = ("ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg", "ocr_word_ch_1.jpg", "ocr_word_en_10.png",
              "det_layout.jpg", "cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg")


def specs_from_exports(work: Path) -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    """Specs from the exports' metadata and their ONNX (paddle2onnx + repair, not optimised)."""
    from converters.passes.paddle_to_onnx import PaddleToOnnxPass
    from converters.passes.repair import RepairPass
    from converters.sources import load_source
    target = Target(profile="bench", arch="x86_64", accelerator="cpu", format="onnx", precision="fp32")
    specs, fp32 = {}, {}
    for name in OCR_EXPORTS:
        source = load_source(SHARED / "models" / "PP-OCR" / name)
        role = source.spec.role
        ctx = PassContext(work, target, role, options={"source": source, "params_file": source.params_file})
        model = ModelFile(source.model_file, source.format)
        for step in (PaddleToOnnxPass(), RepairPass()):
            model = step.run(model, ctx)
        specs[role], fp32[role] = source.spec, model.path
    return specs, fp32


def specs_from_bundle(bundle: Bundle) -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    """Model specs and the FP32 ONNX artifact of every role (whatever the bundle selected)."""
    files = {f.path: bundle.path_of(f.path) for f in bundle.manifest.files}
    specs, fp32 = {}, {}
    for entry in bundle.manifest.models:
        specs[entry.role] = ModelSpec(role=entry.role, task=bundle.manifest.task, name=entry.name,
                                      input=entry.input, preprocess=entry.preprocess,
                                      postprocess=entry.postprocess, labels=entry.labels, files=files)
        art = next((a for a in entry.artifacts if a.format == "onnx" and a.precision == "fp32"), None)
        if art is None:
            raise SystemExit(f"{bundle.root}: model {entry.role} has no FP32 ONNX artifact")
        fp32[entry.role] = bundle.path_of(art.path)
    return specs, fp32


def convert_role(role: str, family, fp32: dict[str, Path], images: list[Path], threads: int,
                 work: Path) -> tuple[ModelFile, ModelFile, float]:
    target = Target(profile="bench", arch="x86_64", accelerator="cpu", format="onnx", precision="int8",
                    quantization="qdq-u8a-s8w")
    options = {"family": family, "fp32_models": fp32, "calib_images": images, "val_images": images,
               "threads": threads}
    ctx = PassContext(work, target, role, progress=lambda m: print("  ", m, flush=True), options=options)
    started = time.perf_counter()
    optimised = OptimizePass().run(ModelFile(fp32[role], "onnx"), ctx)
    result = QuantizePass().run(optimised, ctx)
    return optimised, result, time.perf_counter() - started


def row(role: str, result: ModelFile, seconds: float, threads: list[int]) -> str:
    q = result.notes["quantize"]
    lat = q.get("latency_ms", {})
    cells = [role, "INT8" if q["accepted"] else "FP32"]
    for t in threads:
        fp, i8 = lat.get(f"fp32@{t}", float("nan")), lat.get(f"int8@{t}", float("nan"))
        cells += [f"{fp:.1f}", f"{i8:.1f}", f"{i8 / fp:.3f}"]
    cells += [f"{q['metric']} {q['value']:.4f} (budget {q['budget']:g}, n={q['samples']})",
              str(len(q["fp32_nodes"])), q["calibration_method"], f"{seconds:.0f}s"]
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, nargs="?")
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-threads", type=int, default=1, help="threads for calibration/evaluation runs")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    images = [args.images / name for name in OCR_IMAGES if (args.images / name).is_file()]
    if not images:
        print(f"no OCR images under {args.images}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="quant_ocr."))
    work.mkdir(parents=True, exist_ok=True)
    specs, fp32 = specs_from_bundle(Bundle.open(args.bundle)) if args.bundle else specs_from_exports(work)
    family = family_for("ocr", specs, threads=args.eval_threads)
    threads = thread_counts(args.threads)
    header = ["model", "ships"]
    for t in threads:
        header += [f"fp32 ms@{t}", f"int8 ms@{t}", f"ratio@{t}"]
    lines = [" | ".join(header + ["metric vs fp32", "fp32 nodes", "ranges", "convert"])]
    notes = []
    for role in [r for r in ("det", "cls", "rec") if r in fp32]:
        print(f"{role}:", flush=True)
        optimised, result, seconds = convert_role(role, family, fp32, images, args.threads, work)
        lines.append(row(role, result, seconds, threads))
        feeds = family.latency_feeds(role, fp32, images, LATENCY_FEEDS)
        speed = compare({"export": fp32[role], "optimised": optimised.path}, feeds, 1, 5)
        notes.append(f"{role}: optimised FP32 / exported FP32 at 1 thread = "
                     f"{speed.ratio('optimised', 'export'):.3f}; INT8 / exported FP32 = "
                     f"{result.notes['quantize'].get('latency_ratio_vs_unoptimised_fp32', 'n/a')}; "
                     f"float nodes: {result.notes['quantize']['fp32_nodes']}; "
                     f"decision: {result.notes['quantize']['reason']}")
    print("\n".join(lines))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
