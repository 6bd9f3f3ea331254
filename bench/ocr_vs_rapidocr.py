"""Our OCR bundle vs rapidocr_onnxruntime (the peer users run today), same images, one run.

Prints per image: median end-to-end milliseconds of each (alternating runs, same thread count),
their ratio, and text agreement (CER of our text against theirs, lines joined in reading order), twice:
against rapidocr's defaults, and against rapidocr with its detector given the export's own settings
(the same resize and thresholds our bundle uses), where differences come from the models, not settings.
Beside each CER: the same for our bundle's FP32 twin (untimed), so settings and INT8 can be told apart.
Usage: python bench/ocr_vs_rapidocr.py [BUNDLE] [--threads N] [--runs N] [--images DIR]
Without BUNDLE it converts ../shared/models/PP-OCR for x86-vnni into bundles/ppocr, calibrated on the
shared text pictures.
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

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.metrics import cer  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402
from runtimes.tasks import load_task  # noqa: E402

SHARED = ROOT.parent / "shared"
TEXT_PICTURES = ("ocr_", "det_layout", "cls_img")
IMAGES = ["ocr_word_en_10.png", "ocr_word_ch_1.jpg", "ocr_en_img623.jpg", "ocr_1.jpg", "ocr_11.jpg"]


def ensure_bundle(path: Path | None) -> Path:
    if path:
        return path
    out = ROOT / "bundles" / "ppocr"
    if not (out / "manifest.json").is_file():
        models = SHARED / "models" / "PP-OCR"
        with tempfile.TemporaryDirectory() as calib:        # text pictures: what an OCR device sees
            for picture in (SHARED / "images").iterdir():
                if picture.name.startswith(TEXT_PICTURES):
                    shutil.copyfile(picture, Path(calib) / picture.name)
            subprocess.run([sys.executable, "-m", "edge", "convert", str(models / "ch_PP-OCRv4_det"),
                            str(models / "ch_ppocr_mobile_v2_cls"), str(models / "ch_PP-OCRv4_rec"),
                            "--profile", "x86-vnni", "--calib", calib, "-o", str(out)], cwd=ROOT, check=True)
    return out


def timed(fn, image) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(image)
    return (time.perf_counter() - start) * 1000.0, result


def export_settings(bundle: Bundle) -> dict:
    """rapidocr keyword arguments that make its detector see what our bundle's det model sees: the
    export's resize limit, normalisation and DB thresholds (rapidocr's defaults differ: 736 min-side,
    mean/std 0.5, box_thresh 0.5, unclip 1.6, dilation on)."""
    det = bundle.manifest.model("det")
    ops = {op["op"]: op for op in det.preprocess}
    post = det.postprocess
    return {"det_limit_side_len": ops["resize_limit"]["limit_side_len"],
            "det_limit_type": ops["resize_limit"]["limit_type"],
            "det_mean": ops["normalize"]["mean"], "det_std": ops["normalize"]["std"],
            "det_thresh": post["thresh"], "det_box_thresh": post["box_thresh"],
            "det_unclip_ratio": post["unclip_ratio"], "det_use_dilation": False}


def agreement(lines: list[str], their_lines: list[str]) -> float:
    """CER of our text against theirs, lines joined in reading order (0 when neither reads anything)."""
    return cer(["".join(lines)], ["".join(their_lines)]) if their_lines or lines else 0.0


def compare_with(peer_name: str, ours, twin, theirs, images: Path, runs: int) -> None:
    """`twin`: our bundle's FP32 artifacts, untimed: how much of the disagreement is settings, not INT8."""
    print(f"--- peer: rapidocr_onnxruntime, {peer_name}")
    total_ours = total_theirs = 0.0
    errors = twin_errors = chars = 0
    for name in IMAGES:
        image = cv2.imread(str(images / name))
        ours(image), theirs(image)                 # warm-up (sessions, allocators)
        our_ms, their_ms = [], []
        for run in range(runs):
            for who in ((0, 1) if run % 2 == 0 else (1, 0)):      # alternate who goes first
                if who == 0:
                    ms, our_out = timed(ours, image)
                    our_ms.append(ms)
                else:
                    ms, their_out = timed(theirs, image)
                    their_ms.append(ms)
        our_lines = [r["text"] for r in our_out.results]
        their_lines = [line[1] for line in (their_out[0] or [])]
        a, b = statistics.median(our_ms), statistics.median(their_ms)
        total_ours, total_theirs = total_ours + a, total_theirs + b
        size = max(len("".join(their_lines)), 1)
        ours_cer = agreement(our_lines, their_lines)
        twin_cer = agreement([r["text"] for r in twin(image).results], their_lines)
        errors, twin_errors, chars = errors + ours_cer * size, twin_errors + twin_cer * size, chars + size
        print(f"{name:20s} ours {a:8.1f} ms  rapidocr {b:8.1f} ms  ratio {a / b:5.2f}  "
              f"lines {len(our_lines):2d}/{len(their_lines):2d}  CER vs peer {ours_cer:.3f} (fp32 twin {twin_cer:.3f})")
    print(f"TOTAL end-to-end ratio ours/rapidocr: {total_ours / total_theirs:.2f} "
          f"({total_ours:.0f} ms vs {total_theirs:.0f} ms); CER vs peer over all text {errors / chars:.4f} "
          f"(our fp32 twin: {twin_errors / chars:.4f})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    args = parser.parse_args()
    from rapidocr_onnxruntime import RapidOCR

    bundle = Bundle.open(ensure_bundle(args.bundle))
    bundle.manifest.runtime.threads = args.threads
    ours, twin = load_task(bundle), load_task(bundle.with_precision("fp32"))
    threads = {"intra_op_num_threads": args.threads, "inter_op_num_threads": 1}
    chosen = {m.role: m.selected_artifact().precision for m in bundle.manifest.models}
    print(f"ours: {bundle.root} {chosen}; {args.threads} thread(s), median of {args.runs} alternating runs")
    compare_with("its defaults", ours, twin, RapidOCR(**threads), args.images, args.runs)
    compare_with("detector set to the export's settings", ours, twin, RapidOCR(**threads, **export_settings(bundle)),
                 args.images, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
