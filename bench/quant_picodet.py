"""PicoDet INT8 vs FP32, both shared PicoDet exports, one run: accuracy on held-out pictures and speed.

Per model: `edge convert --profile x86-vnni --calib CAL` on in-domain pictures (street photos for the
COCO model, document pages for the layout model), then on *held-out* in-domain pictures the converter
never saw: box F1 of INT8 vs FP32 (IoU >= 0.5, same label, at the export's draw_threshold; views: as
is, centred 80% crop, mirrored, bottom-right crop) and the latency ratio INT8/FP32 at 1 and 2 threads
(alternating runs, medians). Also prints what the converter recorded: its validation F1 and how many
convolutions it split into channel groups.
Usage: python bench/quant_picodet.py [--rounds N]   (bundles are kept in bundles/<export name>)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.layout_vs_rapid_layout import ensure_bundle  # noqa: E402
from converters.families import detection, family_for  # noqa: E402
from converters.latency import compare  # noqa: E402
from converters.sources import load_source  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402

SHARED = ROOT.parent / "shared"
MODELS = {   # export -> (calibration pictures, held-out pictures)
    "picodet_s_320_coco": (("coco_bus.jpg", "coco_dog.jpg", "coco_zidane.jpg", "det_000000014439.jpg"),
                           ("det_hrnet_demo.jpg", "lite_human.jpg", "seg_humanseg_demo.jpg", "seg_web_human.png")),
    "picodet_lcnet_layout_cdla": (("det_layout.jpg", "ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg"),
                                  ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "ocr_word_ch_1.jpg",
                                   "ocr_word_en_10.png")),
}
HELD_OUT_VIEWS = (("original",), ("crop_center",), ("mirror",), ("crop_bottom_right",))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    detection.VIEWS["evaluation"] = HELD_OUT_VIEWS     # this bench's own, wider look at held-out pictures
    for name, (calibration, held_out) in MODELS.items():
        export = SHARED / "models" / "PP-PicoDet" / name
        bundle = Bundle.open(ensure_bundle(None, export, calibration, name))
        entry = bundle.manifest.model("detector")
        by_precision = {a.precision: bundle.root / a.path for a in entry.artifacts}
        if "int8" not in by_precision:
            print(f"{name}: the converter shipped FP32 only: {entry.decision}")
            continue
        int8 = next(a for a in entry.artifacts if a.precision == "int8")
        family = family_for("detection", {"detector": load_source(export).spec})
        fp32 = {"detector": by_precision["fp32"]}
        pictures = [SHARED / "images" / p for p in held_out]
        verdict = family.evaluate("detector", fp32, by_precision["int8"], pictures)
        feeds = family.latency_feeds("detector", fp32, pictures, 4)
        ratios = {t: compare({"fp32": fp32["detector"], "int8": by_precision["int8"]}, feeds, t, args.rounds)
                  for t in (1, 2)}
        recorded = {k: v for k, v in int8.metrics.items() if k.startswith("box_f1")}
        print(f"{name}: converter's validation {recorded}, {len(int8.channel_groups)} convs in channel groups")
        print(f"  held-out ({len(held_out)} pictures x {len(HELD_OUT_VIEWS)} views): {verdict.describe()}")
        for t, lat in ratios.items():
            print(f"  {t} thread(s): INT8 {lat.median_ms['int8']:.1f} ms vs FP32 {lat.median_ms['fp32']:.1f} ms, "
                  f"ratio {lat.ratio('int8', 'fp32'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
