"""Every Raspberry Pi artifact of the five families: how it was checked here and its metric against FP32.

For each family and each profile (rpi4, rpi5 by default) one real `edge convert` (toolchains installed
first, so their install time is not counted), calibrated on in-domain pictures with the judging
pictures held out (--val), then a table per artifact from the manifest: shipped or refused, what
executed it here (x86 twin, Paddle Inference simulation, qemu-aarch64 emulation), the family metric
and its budget, and what was not executed. Last, the convert time per family and profile.
No ARM timing is printed: nothing here runs on an ARM CPU.
Usage: python bench/arm_artifacts.py [--profiles rpi4,rpi5] [--families detection,...] [--out bundles/arm]
       [--log DIR]   (each convert's timestamped progress lines, to see where the time goes)
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtimes.bundle import Bundle  # noqa: E402

SHARED = ROOT.parent / "shared"
M = SHARED / "models"
# family -> (exports, calibration pictures, judging pictures): in-domain, disjoint
FAMILIES = {
    "detection": (["PP-PicoDet/picodet_s_320_coco"],
                  ["coco_bus.jpg", "coco_zidane.jpg", "det_000000014439.jpg", "det_hrnet_demo.jpg"],
                  ["coco_dog.jpg", "lite_human.jpg", "seg_humanseg_demo.jpg", "seg_web_human.png"]),
    "classification": (["PP-LCNet/PPLCNet_x1_0_text_image_orientation"],
                       ["cls_img_rot0_demo.jpg", "ocr_1.jpg", "det_layout.jpg"],
                       ["cls_img_rot180_demo.jpg", "ocr_11.jpg", "ocr_en_img623.jpg"]),
    "ocr": (["PP-OCR/ch_PP-OCRv4_det", "PP-OCR/ch_ppocr_mobile_v2_cls", "PP-OCR/ch_PP-OCRv4_rec"],
            ["ocr_1.jpg", "ocr_word_ch_1.jpg", "det_layout.jpg", "cls_img_rot0_demo.jpg"],
            ["ocr_11.jpg", "ocr_en_img623.jpg", "ocr_word_en_10.png", "cls_img_rot180_demo.jpg"]),
    "keypoints": (["PP-PicoDet/picodet_s_320_coco", "PP-TinyPose/tinypose_128x96"],
                  ["coco_zidane.jpg", "det_hrnet_demo.jpg"], ["lite_human.jpg", "seg_humanseg_demo.jpg"]),
    "segmentation": (["PP-HumanSeg-Lite/pp_humanseg_lite_portrait_398x224"],
                     ["seg_humanseg_demo.jpg", "coco_zidane.jpg"], ["lite_human.jpg", "seg_web_human.png"]),
}


def pictures(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copyfile(SHARED / "images" / name, folder / name)
    return folder


def convert(family: str, profile: str, out: Path, work: Path, log: Path | None = None) -> float:
    """Seconds for one `edge convert`; with `log`, its timestamped progress lines are written there
    (where the time goes, step by step)."""
    exports, calib, val = FAMILIES[family]
    argv = [sys.executable, "-m", "edge", "convert", *[str(M / e) for e in exports], "--profile", profile,
            "--calib", str(pictures(work / "calib", calib)), "--val", str(pictures(work / "val", val)),
            "-o", str(out), "--no-install"] + ([] if log else ["--quiet"])
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise SystemExit(f"{family}/{profile}: edge convert failed: {proc.stderr.strip()[-500:]}")
    return time.monotonic() - started


def rows(bundle: Path) -> list[tuple]:
    out = []
    for entry in Bundle.open(bundle).manifest.models:
        shipped = {(a.format, a.precision) for a in entry.artifacts}
        for art in entry.artifacts:
            for check in art.checks:
                metric = f"{check.metric} {check.value:.4f} (budget {check.budget:g})" if check.metric else "-"
                out.append((entry.role, f"{art.format} {art.precision}", "shipped", check.executed, metric,
                            check.not_executed or "-"))
        for reason in entry.decision.split(". ", 1)[-1].split("; "):
            label, _, why = reason.partition(": ")
            fmt, _, precision = label.partition(" ")
            if why.startswith("refused") and (fmt, precision.split(" ")[0]) not in shipped:
                out.append((entry.role, label, "refused", "-", why[len("refused: "):][:160], "-"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", default="rpi4,rpi5")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path, default=ROOT / "bundles" / "arm")
    parser.add_argument("--log", type=Path, help="folder for each convert's timestamped progress lines")
    args = parser.parse_args()
    for name in ("paddle-lite", "arm-emulator"):
        subprocess.run([sys.executable, "-m", "edge", "toolchain", "install", name], cwd=ROOT, check=True)
    times = {}
    for profile in args.profiles.split(","):
        for family in args.families.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                out = args.out / f"{family}-{profile}"
                log = args.log / f"{family}-{profile}.log" if args.log else None
                times[(family, profile)] = convert(family, profile, out, Path(tmp), log)
            print(f"\n## {family} on {profile} (convert {times[(family, profile)]:.0f} s)")
            print("| model | artifact | verdict | executed here | metric vs FP32 | not executed here |")
            print("|---|---|---|---|---|---|")
            for row in rows(out):
                print("| " + " | ".join(row) + " |")
    print("\n| profile | " + " | ".join(args.families.split(",")) + " | total |")
    print("|---|" + "---|" * (len(args.families.split(",")) + 1))
    for profile in args.profiles.split(","):
        spent = [times[(f, profile)] for f in args.families.split(",")]
        print(f"| {profile} | " + " | ".join(f"{s:.0f} s" for s in spent) + f" | {sum(spent):.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
