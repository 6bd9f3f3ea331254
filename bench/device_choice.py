"""What `edge bench` picks on this machine for the x86-vnni bundle of each family, and how much faster that is
than what the profile's order alone would run.

Per family: one real `edge convert --profile x86-vnni --calib C --val V` (the in-domain pictures of
bench/arm_artifacts.py; the bundle ships up to 4 of the V pictures as samples), then one real `edge bench`
on those samples. Printed per model: the artifact picked, the one the bundle's order picks without a record,
their p50 latencies (whole pipeline per frame, the other models on FP32) and the ratio picked / order, and the
agreement verdict. Ratios come from one bench run each (its runs alternate, see edge/device/bench.py).
Usage: python bench/device_choice.py [--families ocr,detection,...] [--frames 30] [--threads 1] [--work DIR]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arm_artifacts import FAMILIES, M, pictures  # noqa: E402  (bench/ is this script's folder)

from edge.device.record import BenchRecord, record_path  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402

PROFILE = "x86-vnni"


def edge(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"edge {args[0]} failed: {proc.stderr.strip().splitlines()[-1]}")


def convert(family: str, work: Path) -> Path:
    out = work / "bundles" / family
    if (out / "manifest.json").is_file() and Bundle.open(out).manifest.samples:
        return out                                  # made by an earlier run of this script
    exports, calib, val = FAMILIES[family]
    edge("convert", *[str(M / e) for e in exports], "--profile", PROFILE, "--quiet", "-o", str(out),
         "--calib", str(pictures(work / "pictures" / family / "calib", calib)),
         "--val", str(pictures(work / "pictures" / family / "val", val)))
    return out


def rows(family: str, record: BenchRecord) -> list[str]:
    lines = []
    for choice in record.roles:
        picked, order = choice.measured(choice.chosen), choice.measured(choice.default)
        ratio = f"{picked.p50_ms / order.p50_ms:.2f}" if order and order.p50_ms else "n/a"
        verdict = "FP32 reference" if picked.reference else picked.verdict
        lines.append(f"| {family} | {choice.role} | {choice.chosen} | {picked.p50_ms:.1f} | {choice.default} | "
                     f"{order.p50_ms if order is None else round(order.p50_ms, 1)} | {ratio} | {verdict} |")
    if record.combined is not None:
        lines.append(f"| {family} | together | {', '.join(record.combined.runs_with.values())} | "
                     f"{record.combined.p50_ms} | | | | {record.combined.verdict} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="threads per model (0: the bundle's default)")
    parser.add_argument("--work", type=Path, help="bundles, pictures and the state folder (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="device-choice-"))
    state = work / "state"
    table = ["| family | model | edge bench picks | p50 ms | profile order runs | p50 ms | ratio | agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for family in args.families.split(","):
        started = time.monotonic()
        bundle = convert(family, work)
        converted = time.monotonic() - started
        edge("bench", str(bundle), "--frames", str(args.frames), "--threads", str(args.threads),
             "--state-dir", str(state), "--quiet")
        path = record_path(Bundle.open(bundle), state)
        table += rows(family, BenchRecord.model_validate_json(path.read_text(encoding="utf-8")))
        print(f"{family}: converted in {converted:.0f} s, benched in {time.monotonic() - started - converted:.0f} s "
              f"({path.with_suffix('')}/bench.md)", file=sys.stderr, flush=True)
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
