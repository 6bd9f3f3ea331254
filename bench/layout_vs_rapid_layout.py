"""Our PicoDet layout bundle vs rapid_layout (the peer users run today), same images, one run.

Prints per image: median end-to-end milliseconds of each (alternating runs, same thread count), their
ratio, and the boxes matched at IoU >= 0.5 with the same label (the peer's boxes are the reference); then
the box F1 over all images and the ratio of the summed medians.
Usage: python bench/layout_vs_rapid_layout.py [BUNDLE] [--threads N] [--runs N] [--images DIR]
Without BUNDLE it converts ../shared/models/PP-PicoDet/picodet_lcnet_layout_cdla for x86-vnni into
bundles/picodet_layout (calibrated on the shared document pictures).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.metrics import BoxMatch, match_boxes  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402
from runtimes.image import read_image  # noqa: E402
from runtimes.tasks import load_task  # noqa: E402

SHARED = ROOT.parent / "shared"
EXPORT = SHARED / "models" / "PP-PicoDet" / "picodet_lcnet_layout_cdla"
CALIBRATION = ("det_layout.jpg", "ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg")
IMAGES = ("det_layout.jpg", "ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg", "cls_img_rot0_demo.jpg",
          "cls_img_rot180_demo.jpg", "coco_bus.jpg")


def ensure_bundle(path: Path | None, export: Path, calibration: tuple[str, ...], name: str) -> Path:
    """`path`, or bundles/<name> converted from `export` for x86-vnni when it is not there yet."""
    if path:
        return path
    out = ROOT / "bundles" / name
    if not (out / "manifest.json").is_file():
        with tempfile.TemporaryDirectory() as calib:
            for picture in calibration:
                shutil.copyfile(SHARED / "images" / picture, Path(calib) / picture)
            subprocess.run([sys.executable, "-m", "edge", "convert", str(export), "--profile", "x86-vnni",
                            "--calib", calib, "-o", str(out)], cwd=ROOT, check=True)
    return out


def alternating_medians(ours, theirs, image, runs: int) -> tuple[float, float, object, object]:
    """Median ms of each over `runs` rounds, taking turns who goes first (neither always gets a warm cache)."""
    ours(image), theirs(image)                     # warm-up (sessions, allocators)
    times: dict[int, list[float]] = {0: [], 1: []}
    outputs = [None, None]
    for run in range(runs):
        for who in ((0, 1) if run % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            outputs[who] = (ours, theirs)[who](image)
            times[who].append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1]), outputs[0], outputs[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    args = parser.parse_args()
    from rapid_layout import RapidLayout

    bundle = Bundle.open(ensure_bundle(args.bundle, EXPORT, CALIBRATION, "picodet_layout"))
    bundle.manifest.runtime.threads = args.threads
    ours = load_task(bundle)
    theirs = RapidLayout(engine_cfg={"intra_op_num_threads": args.threads, "inter_op_num_threads": 1})
    precision = bundle.manifest.model("detector").selected_artifact().precision
    print(f"ours: {bundle.root} ({precision}); peer: rapid_layout defaults (pp_layout_cdla); "
          f"{args.threads} thread(s), median of {args.runs} alternating runs")
    total, sum_ours, sum_theirs = BoxMatch(), 0.0, 0.0
    for name in IMAGES:
        image = read_image(args.images / name)
        a, b, our_out, their_out = alternating_medians(ours, theirs, image, args.runs)
        got = our_out.results
        ref = [{"label": label, "box": list(map(float, box))}
               for box, label in zip(their_out.boxes or [], their_out.class_names or [])]
        match = match_boxes([d["box"] for d in got], [d["box"] for d in ref], 0.5,
                            [d["label"] for d in got], [d["label"] for d in ref])
        total, sum_ours, sum_theirs = total + match, sum_ours + a, sum_theirs + b
        print(f"{name:24s} ours {a:7.1f} ms  rapid_layout {b:7.1f} ms  ratio {a / b:5.2f}  "
              f"boxes ours {len(got):2d} peer {len(ref):2d} matched {match.tp:2d}")
    print(f"box F1 vs rapid_layout (IoU 0.5, same label): {total.f1:.4f} over {total.tp + total.fn} peer boxes "
          f"(tp {total.tp} fp {total.fp} fn {total.fn}); time ratio ours/peer {sum_ours / sum_theirs:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
