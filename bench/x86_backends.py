"""x86 at full speed (issue 11): what `edge convert --profile x86-amx` ships against OpenVINO alone, per family.

Per family (PicoDet-S-320 COCO, PP-LCNet orientation, PP-OCRv4 det/cls/rec and the OCR pipeline per page,
PP-TinyPose with its PicoDet person detector, PP-HumanSeg-Lite): one real convert with the in-domain pictures of
bench/arm_artifacts.py (work folder kept), then per model, in one process, timed alternately (converters/latency.py:
the same feeds, the order flipped every round) at 1 thread and 2 threads:
  (a) ours   the artifact the bundle selected, as the device runs it (runtimes' precision hint, profile properties);
  (b) peer   OpenVINO at its defaults on the plain Paddle export (`core.compile_model("model.pdmodel", "CPU")`, the
             two lines a user writes; only INFERENCE_NUM_THREADS set, to time 1 and 2 threads; on this CPU its
             default precision is bf16);
  (c) ov32   OpenVINO f32 IR the converter built (the faster front end);
  (d) ort32  onnxruntime FP32 (the FP32 reference, also the bundle's fallback).
and each one's family metric against (d) on the judging pictures. OCR end to end: the OcrTask of the bundle with
each variant's det/cls/rec swapped in, ms per page (pre/post-processing included) and the page text CER vs (d).
Printed: the table, then (a)/(b) and (a)/(d). Bars: (a)/(b) <= 1.0 everywhere at equal or better accuracy,
(a)/(d) <= 0.5 on PicoDet, OCR det and HumanSeg.
Run alone: flock /tmp/heavy.lock python bench/x86_backends.py [--families detection,...] [--work DIR] [--rounds 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arm_artifacts import FAMILIES, M, pictures  # noqa: E402  (bench/ is this script's folder)

from converters.families import family_for  # noqa: E402
from converters.latency import compare, session  # noqa: E402
from converters.metrics import cer  # noqa: E402
from converters.pipeline import ConvertRequest, convert  # noqa: E402
from converters.runners.base import InputInfo, Runner  # noqa: E402
from converters.runners.openvino import OpenVinoRunner  # noqa: E402
from converters.sources import load_source  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402
from runtimes.image import read_image  # noqa: E402
from runtimes.tasks import load_task  # noqa: E402

PROFILE = "x86-amx"
THREADS = (1, 2)
VARIANTS = ("ours", "peer", "ov32", "ort32")
FEEDS = 4
HALF_BAR = {"detection:detector", "ocr:det", "segmentation:segmenter"}     # (a)/(d) <= 0.5 there


class PeerRunner(Runner):
    """OpenVINO at its defaults on the Paddle export; fed and read by position (Paddle's own tensor names)."""

    def __init__(self, model_file: Path, threads: int):
        import openvino as ov
        self.compiled = ov.Core().compile_model(str(model_file), "CPU", {"INFERENCE_NUM_THREADS": threads})
        self.request = self.compiled.create_infer_request()
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.description = f"OpenVINO defaults on {model_file.name} ({self.precision}, {threads} thread(s))"

    def get_inputs(self) -> list[InputInfo]:
        return [InputInfo(i.get_any_name(), []) for i in self.compiled.inputs]

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(list(feeds.values()), share_outputs=False)
        return [np.asarray(result[port]) for port in self.compiled.outputs]


def shipped_runner(bundle: Bundle, role: str, threads: int):
    art = bundle.manifest.model(role).selected_artifact()
    path = bundle.path_of(art.path)
    if art.format == "onnx":
        return path                    # converters.latency makes the session (threads as asked)
    return OpenVinoRunner(path, threads, art.execution_precision, bundle.manifest.runtime.openvino)


def runners(bundle: Bundle, work: Path, role: str, export: Path, threads: int) -> dict[str, Any]:
    reference = work / f"{role}.fp32.xml"
    fp32_onnx = bundle.path_of(next(a.path for a in bundle.manifest.model(role).artifacts
                                    if (a.format, a.precision) == ("onnx", "fp32")))
    return {"ours": shipped_runner(bundle, role, threads), "peer": PeerRunner(load_source(export).model_file, threads),
            "ov32": OpenVinoRunner(reference, threads, "fp32"), "ort32": fp32_onnx}


def model_rows(family: str, bundle: Bundle, work: Path, exports: dict[str, Path], val: list[Path],
               rounds: int) -> list[dict]:
    manifest = bundle.manifest
    fp32 = {m.role: bundle.path_of(next(a.path for a in m.artifacts if (a.format, a.precision) == ("onnx", "fp32")))
            for m in manifest.models}
    specs = {role: load_source(path).spec for role, path in exports.items()}
    fam = family_for(manifest.task, specs)
    rows = []
    for entry in manifest.models:
        role, art = entry.role, entry.selected_artifact()
        feeds = fam.latency_feeds(role, fp32, val, FEEDS)
        ms: dict[str, dict[int, float]] = {v: {} for v in VARIANTS}
        for t in THREADS:
            lat = compare(runners(bundle, work, role, exports[role], t), feeds, t, rounds)
            for v in VARIANTS:
                ms[v][t] = lat.median_ms[v]
        judged = runners(bundle, work, role, exports[role], max(THREADS))
        metric = {v: fam.evaluate(role, fp32, judged[v], val) for v in VARIANTS if v != "ort32"}
        rows.append({"family": family, "model": role, "ours": f"{art.format} {art.precision}", "ms": ms,
                     "metric": {v: f"{e.value:.4f}{'' if e.passed else ' (misses)'}" for v, e in metric.items()},
                     "metric_name": next(iter(metric.values())).metric, "peer_precision": judged["peer"].precision})
    return rows


class SwappedModel:
    """A runner in place of a task's backend (ModelRunner.infer calls backend.run(feeds))."""

    def __init__(self, runner, threads: int):
        self.runner = session(runner, threads)       # an ONNX path becomes a session; a Runner stays as it is

    def run(self, feeds):
        return self.runner.run(None, feeds)


def ocr_pipeline_row(bundle: Bundle, work: Path, exports: dict[str, Path], val: list[Path], rounds: int) -> dict:
    """Whole pages through OcrTask with each variant's three models; ms per page and page text CER vs ort32."""
    images = [read_image(p) for p in val]
    ms, texts = {v: {} for v in VARIANTS}, {}
    for t in THREADS:
        tasks = {}
        per_role = {role: runners(bundle, work, role, exports[role], t) for role in ("det", "cls", "rec")}
        for v in VARIANTS:
            tasks[v] = load_task(bundle)
            for role in ("det", "cls", "rec"):
                getattr(tasks[v], role).backend = SwappedModel(per_role[role][v], t)
        times = {v: [[] for _ in images] for v in VARIANTS}
        for v in VARIANTS:           # warm-up, and the page texts
            texts[v] = ["".join(r["text"] for r in tasks[v](image).results) for image in images]
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for i, image in enumerate(images):
                for v in order:
                    start = time.perf_counter()
                    tasks[v](image)
                    times[v][i].append((time.perf_counter() - start) * 1000)
        for v in VARIANTS:
            ms[v][t] = statistics.fmean(statistics.median(x) for x in times[v])
    metric = {v: f"{statistics.fmean(cer([a], [b]) for a, b in zip(texts[v], texts['ort32'])):.4f}"
              for v in VARIANTS if v != "ort32"}
    return {"family": "ocr", "model": "pipeline per page", "ours": "selected per model", "ms": ms, "metric": metric,
            "metric_name": "page text CER vs ort32 (mean per page)", "peer_precision": "-"}


def print_rows(rows: list[dict]) -> None:
    head = " | ".join(f"{v} ms 1t/2t" for v in VARIANTS)
    print(f"| family | model | ours is | {head} | metric vs FP32: ours / peer / ov32 | (a)/(b) 1t/2t | (a)/(d) 1t/2t |")
    print("|---|---|---|" + "---|" * len(VARIANTS) + "---|---|---|")
    for row in rows:
        ms = row["ms"]
        cells = " | ".join(f"{ms[v][1]:.2f} / {ms[v][2]:.2f}" for v in VARIANTS)
        ab = " / ".join(f"{ms['ours'][t] / ms['peer'][t]:.2f}" for t in THREADS)
        ad = " / ".join(f"{ms['ours'][t] / ms['ort32'][t]:.2f}" for t in THREADS)
        metric = " / ".join(row["metric"][v] for v in ("ours", "peer", "ov32"))
        print(f"| {row['family']} | {row['model']} | {row['ours']} | {cells} | {row['metric_name']}: {metric} "
              f"(peer ran {row['peer_precision']}) | {ab} | {ad} |")


def bars(rows: list[dict]) -> None:
    print("\nbars: (a)/(b) <= 1.0 every model; (a)/(d) <= 0.5 on PicoDet, OCR det, HumanSeg")
    for row in rows:
        worst_ab = max(row["ms"]["ours"][t] / row["ms"]["peer"][t] for t in THREADS)
        line = f"  {row['family']}/{row['model']}: (a)/(b) max {worst_ab:.2f} {'ok' if worst_ab <= 1.0 else 'MISSED'}"
        if f"{row['family']}:{row['model']}" in HALF_BAR:
            worst_ad = max(row["ms"]["ours"][t] / row["ms"]["ort32"][t] for t in THREADS)
            line += f"; (a)/(d) max {worst_ad:.2f} {'ok' if worst_ad <= 0.5 else 'MISSED'}"
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--work", type=Path, help="bundles, work folders, pictures (default: a temp folder)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="x86-backends-"))
    rows = []
    for family in args.families.split(","):
        names, calib, val = FAMILIES[family]
        exports = {load_source(M / n).spec.role: M / n for n in names}
        out, work = root / "bundles" / family, root / "work" / family
        if not (out / "manifest.json").is_file():
            started = time.monotonic()
            convert(ConvertRequest(sources=[M / n for n in names], profile=PROFILE, out=out, workdir=work,
                                   calib=pictures(root / "pictures" / family / "calib", calib),
                                   val=pictures(root / "pictures" / family / "val", val)))
            print(f"{family}: converted in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        bundle, val_paths = Bundle.open(out), sorted((root / "pictures" / family / "val").iterdir())
        rows += model_rows(family, bundle, work, exports, val_paths, args.rounds)
        if family == "ocr":
            rows.append(ocr_pipeline_row(bundle, work, exports, val_paths, args.rounds))
        print(f"{family}: measured", file=sys.stderr, flush=True)
    print_rows(rows)
    bars(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
