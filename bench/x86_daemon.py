"""The daemon's images per second on x86 (issue 11): before and after OpenVINO, and frames in flight.

1. Before / after: the daemon on the same OCR pictures with two bundles of the same three exports, one
   converted with onnxruntime-only candidates (what x86 profiles shipped before OpenVINO: the profile's ONNX
   choices alone) and one with the profile as it is (OpenVINO candidates included), in alternating rounds.
2. In flight: the daemon with `in_flight: N` against `in_flight: 1`, per bundle given (default: the OCR
   bundle of 1. and a PicoDet COCO bundle), alternating rounds.

Each measure counts until the broker (a local mosquitto, QoS 1) acknowledged every result (see
bench/daemon_throughput.py, whose daemon_rate this uses). Medians of per-round ratios are printed.
Usage: flock /tmp/heavy.lock python bench/x86_daemon.py [--profile x86-amx] [--rounds 5] [--copies 3]
       [--in-flight 2] [--work DIR]   (bundles are converted into --work once and reused)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from arm_artifacts import FAMILIES, pictures  # noqa: E402
from daemon_throughput import OCR_IMAGES, SHARED, compare, daemon_rate, image_files  # noqa: E402
from device_profiles import path_of  # noqa: E402
from edge.broker import LocalBroker  # noqa: E402

OCR_SOURCES = [SHARED / "models" / "PP-OCR" / n for n in ("ch_PP-OCRv4_det", "ch_ppocr_mobile_v2_cls",
                                                           "ch_PP-OCRv4_rec")]
PICODET_SOURCES = [SHARED / "models" / "PP-PicoDet" / "picodet_s_320_coco"]
PICODET_IMAGES = ["coco_bus.jpg", "coco_dog.jpg", "coco_zidane.jpg", "det_000000014439.jpg"]


def onnx_only_profile(name: str, folder: Path) -> Path:
    """The profile with its ONNX choices alone: what the x86 profiles shipped before OpenVINO."""
    data = yaml.safe_load(path_of(name).read_text())
    data["name"] = f"{name}-onnx-only"
    data["artifacts"] = [a for a in data["artifacts"] if a["format"] == "onnx"]
    for artifact in data["artifacts"]:
        artifact.pop("fallback", None)
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def converted(out: Path, sources: list[Path], profile: str | Path, family: str) -> Path:
    """Calibrated and judged on bench/arm_artifacts.py's in-domain pictures of `family` (as bench/x86_backends.py
    converts, so its bundles can be reused here: --work with `ocr` and `picodet` linked to them)."""
    if not (out / "manifest.json").is_file():
        print(f"converting {out.name} ({profile}) ...", flush=True)
        _, calib, val = FAMILIES[family]
        folder = Path(tempfile.mkdtemp(prefix=f"{out.name}-pictures-", dir=out.parent))
        subprocess.run([sys.executable, "-m", "edge", "convert", *map(str, sources), "--profile", str(profile),
                        "--calib", str(pictures(folder / "calib", calib)), "--val", str(pictures(folder / "val", val)),
                        "-o", str(out), "--quiet"], cwd=ROOT, check=True)
    return out


def chosen(bundle: Path) -> str:
    from runtimes.bundle import Bundle
    return ", ".join(f"{m.role} {m.selected_artifact().format} {m.selected_artifact().precision}"
                     for m in Bundle.open(bundle).manifest.models)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="x86-amx")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", type=int, default=3, help="copies of each picture per round")
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-x86-daemon-"))
    work.mkdir(parents=True, exist_ok=True)
    before = converted(work / "ocr-onnx-only", OCR_SOURCES, onnx_only_profile(args.profile, work), "ocr")
    after = converted(work / "ocr", OCR_SOURCES, args.profile, "ocr")
    picodet = converted(work / "picodet", PICODET_SOURCES, args.profile, "detection")
    print(f"before: {chosen(before)}\nafter:  {chosen(after)}\npicodet: {chosen(picodet)}")
    run = Path(tempfile.mkdtemp(prefix="rounds-", dir=work))
    with LocalBroker(run / "broker") as broker:
        ocr_paths = image_files(OCR_IMAGES, args.copies, run / "ocr-images")
        det_paths = image_files(PICODET_IMAGES, args.copies * 3, run / "det-images")
        print(f"1. OCR daemon, after/before, {len(ocr_paths)} pictures per round")
        ocr = compare("after/before", args.rounds,
                      lambda n: daemon_rate(after, ocr_paths, broker, run / f"a{n}", spool=True),
                      lambda n: daemon_rate(before, ocr_paths, broker, run / f"b{n}", spool=True))
        flights = {}
        for name, bundle, paths in (("OCR", after, ocr_paths), ("PicoDet", picodet, det_paths)):
            print(f"2. {name} daemon, in_flight {args.in_flight} / 1, {len(paths)} pictures per round")
            k = args.in_flight
            flights[name] = compare(f"in_flight {k}/1", args.rounds,
                                    lambda n, b=bundle, p=paths: daemon_rate(b, p, broker, run / f"{name}{n}k",
                                                                             spool=True, in_flight=k),
                                    lambda n, b=bundle, p=paths: daemon_rate(b, p, broker, run / f"{name}{n}1",
                                                                             spool=True))
    print(f"\nOCR daemon images/s: before (onnxruntime only) {ocr.second:.2f}, after {ocr.first:.2f}: "
          f"x{ocr.wall:.2f} (CPU per image x{ocr.cpu:.2f} less)")
    for name, c in flights.items():
        print(f"{name} daemon images/s: in_flight 1 {c.second:.2f}, in_flight {args.in_flight} {c.first:.2f}: "
              f"x{c.wall:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
