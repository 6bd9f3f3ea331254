"""Small pictures with small print: line recall of our OCR bundle vs rapidocr_onnxruntime at its defaults.

    python bench/ocr_small_print.py [BUNDLE] [--threads N] [--runs N]

The set (built here, never stored): the shared text pictures shrunk so their short side is 240, 320, 400
and 480 px (a picture is used only at sizes below its own), and two sheets of the demo's rendered samples
(edge/demo.py) stacked on a sheet, alone and lying on a desk, shrunk the same way.

Line recall, per picture: the share of its reference lines found in the reading. A reference line is
found when some stretch of the reading (its lines joined in reading order, spaces removed) is within
LINE_TOLERANCE edits per reference character of it (approximate substring match, so a line the reader
splits in two or merges with its neighbour still counts). References: for the demo sheets, the rendered
text; for a shared picture, the lines that both the peer at its defaults and our pipeline at the export's
own resize (no small-input policy) read on the picture at its original size, keeping lines of at least
MIN_LINE_CHARS characters: text both can read when it is big enough, so what is measured is what each
loses as the picture shrinks, not where their box thresholds differ (the peer keeps boxes scoring 0.5, the
export 0.6). A scale's recall is the mean over its pictures, so one dense page cannot hide a sign that lost
its lines.

Printed: recall per scale for the peer, for our bundle at the export's own resize (the small-input policy
turned off) and at the bundle's policy; then the median pipeline latency before (policy off) and after
(policy on), side by side, on large pages and on mid-size pictures (LARGE_PAGES, MID_SIZE).
Without BUNDLE it converts ../shared/models/PP-OCR with an FP32-only x86 profile into bundles/ppocr_fp32.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.demo import SAMPLE_LINES, render_samples  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402
from runtimes.tasks import load_task  # noqa: E402
from runtimes.tasks.ocr import OcrTask  # noqa: E402

SHARED = ROOT.parent / "shared"
TEXT_PICTURES = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "det_layout.jpg", "ocr_1.jpg", "ocr_11.jpg",
                 "ocr_en_img623.jpg")
SHORT_SIDES = (240, 320, 400, 480)
LINE_TOLERANCE = 0.25       # edits per reference character: a quarter of a line may be misread (3-letter lines: none,
                            # or gibberish matches them: the peer's noise on det_layout at 240 px "found" 'All')
MIN_LINE_CHARS = 3          # shorter references match almost any reading as a substring
NOTE_MARGIN = 1.25          # the demo sheet on a desk: desk height / sheet height
# Timing, policy off ("before") vs on ("after"): large pages (short side >= 700: text pages and camera frames) and
# mid-size pictures (short side 500-700); the policy should leave both as they were (it enlarges small pictures only).
LARGE_PAGES = ("ocr_1.jpg", "det_layout.jpg", "coco_zidane.jpg", "coco_bus.jpg", "seg_humanseg_demo.jpg")
MID_SIZE = ("ocr_en_img623.jpg", "ocr_11.jpg", "coco_dog.jpg", "lite_human.jpg")
FP32_PROFILE = "name: bench-onnx-fp32\ndescription: ONNX FP32 only (bench)\nfamily: x86\narch: x86_64\n" \
               "accelerator: cpu\nthreads: 1\nartifacts:\n  - format: onnx\n    precision: fp32\n"

Reader = Callable[[np.ndarray], list[str]]


@dataclass
class SmallPicture:
    name: str                # e.g. "ocr_11.jpg@320"
    side: int                # its short side
    image: np.ndarray
    reference: list[str]     # lines, spaces removed


def plain(text: str) -> str:
    """A line as compared: without spaces (readers differ in where they put them)."""
    return "".join(text.split())


def substring_edits(needle: str, haystack: str) -> int:
    """Fewest edits that turn `needle` into some substring of `haystack` (semi-global edit distance: the
    match may start and end anywhere in the haystack). One numpy row per needle character."""
    if not needle:
        return 0
    hay = np.frombuffer(haystack.encode("utf-32-le"), np.uint32)
    steps = np.arange(len(hay) + 1)
    row = np.zeros(len(hay) + 1, np.int64)              # free start anywhere
    for i, char in enumerate(needle, 1):
        diagonal = row[:-1] + (hay != ord(char))        # substitute or match
        best = np.minimum(np.concatenate(([i], diagonal)), row + 1)   # ... or skip the needle's char
        row = np.minimum.accumulate(best - steps) + steps  # ... or skip haystack chars (insertions), left to right
    return int(row.min())                               # free end anywhere


def line_recall(reference: list[str], reading: list[str], tolerance: float = LINE_TOLERANCE) -> float:
    """Share of reference lines found in the reading (module docstring); 1.0 for no reference lines."""
    if not reference:
        return 1.0
    text = "".join(plain(line) for line in reading)
    return sum(substring_edits(line, text) <= tolerance * len(line) for line in reference) / len(reference)


def shrink(image: np.ndarray, short_side: int) -> np.ndarray:
    factor = short_side / min(image.shape[:2])
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def demo_sheets() -> list[tuple[str, np.ndarray, list[str]]]:
    """The demo's rendered samples stacked on one sheet, and that sheet lying on a grey desk (NOTE_MARGIN
    times its height, 4:3): the same lines in print a third smaller again for every picture size."""
    with tempfile.TemporaryDirectory() as folder:
        sheet = np.concatenate([cv2.imread(str(path)) for path in render_samples(Path(folder))], axis=0)
    lines = [plain(line) for group in SAMPLE_LINES for line in group]
    height = round(sheet.shape[0] * NOTE_MARGIN)
    desk = np.full((height, height * 4 // 3, 3), 110, np.uint8)
    top, left = (desk.shape[0] - sheet.shape[0]) // 2, (desk.shape[1] - sheet.shape[1]) // 2
    desk[top:top + sheet.shape[0], left:left + sheet.shape[1]] = sheet
    return [("demo_sheet", sheet, lines), ("demo_note", desk, lines)]


def agreed_lines(image: np.ndarray, readers: list[Reader]) -> list[str]:
    """The lines of the first reader's reading that every other reader also finds (as line_recall finds)."""
    readings = [[plain(line) for line in reader(image)] for reader in readers]
    return [line for line in readings[0] if len(line) >= MIN_LINE_CHARS
            and all(line_recall([line], other) == 1.0 for other in readings[1:])]


def small_pictures(readers: list[Reader], sides: tuple[int, ...] = SHORT_SIDES,
                   names: tuple[str, ...] = TEXT_PICTURES, images: Path = SHARED / "images") -> list[SmallPicture]:
    """The small-picture set; a shared picture's reference is what `readers` agree on at its original size
    (a picture on which they agree on nothing is left out: it would count 1.0 for everybody)."""
    sources = []
    for name in names:
        image = cv2.imread(str(images / name))
        if image is None:
            raise FileNotFoundError(f"cannot read {images / name}")
        sources.append((name, image, agreed_lines(image, readers)))
    sources += demo_sheets()
    return [SmallPicture(f"{name}@{side}", side, shrink(image, side), reference)
            for name, image, reference in sources if reference
            for side in sides if side < min(image.shape[:2])]


def recall_per_side(reader: Reader, pictures: list[SmallPicture]) -> dict[int, float]:
    """Mean line recall of `reader` per short side."""
    per_side: dict[int, list[float]] = {}
    for picture in pictures:
        per_side.setdefault(picture.side, []).append(line_recall(picture.reference, reader(picture.image)))
    return {side: float(np.mean(values)) for side, values in sorted(per_side.items())}


def peer_reader(threads: int = 1) -> Reader:
    """rapidocr_onnxruntime 1.4.4 at its defaults (its detector's short side goes to 736)."""
    from rapidocr_onnxruntime import RapidOCR
    engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
    return lambda image: [line[1] for line in (engine(image)[0] or [])]


def our_reader(task: OcrTask) -> Reader:
    return lambda image: [result["text"] for result in task(image).results]


def policy_off(bundle: Bundle) -> Bundle:
    """The bundle with the det resize at the export's own settings (the small-input policy turned off)."""
    return bundle.with_preprocess({"det": {"resize_limit": {"min_side_len": 0}}})


def ensure_bundle(path: Path | None) -> Path:
    if path:
        return path
    out = ROOT / "bundles" / "ppocr_fp32"
    if not (out / "manifest.json").is_file():
        models = SHARED / "models" / "PP-OCR"
        with tempfile.TemporaryDirectory() as work:
            profile = Path(work) / "fp32.yaml"
            profile.write_text(FP32_PROFILE, encoding="utf-8")
            subprocess.run([sys.executable, "-m", "edge", "convert", str(models / "ch_PP-OCRv4_det"),
                            str(models / "ch_ppocr_mobile_v2_cls"), str(models / "ch_PP-OCRv4_rec"),
                            "--profile", str(profile), "--calib", str(SHARED / "images"), "-o", str(out)],
                           cwd=ROOT, check=True)
    return out


def latency(before: OcrTask, after: OcrTask, names: tuple[str, ...], runs: int) -> None:
    """Median pipeline milliseconds per picture, the two tasks alternating so drift hits both alike."""
    totals = [0.0, 0.0]
    for name in names:
        image = cv2.imread(str(SHARED / "images" / name))
        times: list[list[float]] = [[], []]
        before(image), after(image)                 # warm-up
        for run in range(runs):
            for who in ((0, 1) if run % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                (before, after)[who](image)
                times[who].append((time.perf_counter() - start) * 1000.0)
        a, b = statistics.median(times[0]), statistics.median(times[1])
        totals = [totals[0] + a, totals[1] + b]
        size = f"{image.shape[1]}x{image.shape[0]}"
        print(f"{name:24s} {size:>9s}  before {a:7.1f}  after {b:7.1f}  ratio {b / a:5.3f}")
    print(f"{'TOTAL':24s} {'':9s}  before {totals[0]:7.1f}  after {totals[1]:7.1f}  ratio {totals[1] / totals[0]:5.3f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    bundle = Bundle.open(ensure_bundle(args.bundle))
    bundle.manifest.runtime.threads = args.threads
    det = bundle.manifest.model("det")
    print(f"ours: {bundle.root}, det pre-processing {[op for op in det.preprocess if op['op'] == 'resize_limit']}")
    ours, export = load_task(bundle), load_task(policy_off(bundle))
    peer = peer_reader(args.threads)
    pictures = small_pictures([peer, our_reader(export)])
    print(f"{len(pictures)} small pictures; line recall (mean per picture) by short side:")
    rows = {"rapidocr defaults": recall_per_side(peer, pictures),
            "ours, export resize": recall_per_side(our_reader(export), pictures),
            "ours, bundle policy": recall_per_side(our_reader(ours), pictures)}
    sides = sorted(next(iter(rows.values())))
    print(f"{'':22s}" + "".join(f"{side:>8d}" for side in sides) + "    mean")
    for label, values in rows.items():
        print(f"{label:22s}" + "".join(f"{values[s]:8.3f}" for s in sides) + f"  {np.mean(list(values.values())):6.3f}")
    verdict = all(rows["ours, bundle policy"][s] >= rows["rapidocr defaults"][s] for s in sides)
    print(f"ours >= peer at every scale: {verdict}")
    print(f"--- large pages: pipeline ms, median of {args.runs} alternating runs, {args.threads} thread(s)")
    latency(export, ours, LARGE_PAGES, args.runs)
    print("--- mid-size pictures")
    latency(export, ours, MID_SIZE, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
