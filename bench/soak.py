"""An hour at full rate: does the daemon leak memory, file descriptors or threads?

The daemon runs a real PP-LCNet bundle (ONNX FP32) on a folder source that a consumer recycles forever
(each picture whose result arrives is replaced by a copy under a new name), publishing to a local
mosquitto at QoS 1 through its spool. Every minute it prints the daemon's RSS, open fds and threads
(from /proc/<pid>), the spool depth (from the daemon's metrics), images/s (results that arrived) and the
state database's size, then a verdict line: RSS growth after the first 5 minutes under 5 %, and flat
fds and threads. Usage:
    python bench/soak.py [--minutes 60] [--interval 60] [--bundle DIR] [--backlog 48] [--work DIR]
Without --bundle it converts PP-LCNet from ../shared/models (about 5 s). Exit status 1 on a FAIL verdict.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.edge.lcnet_bundle import lcnet_fp32_bundle  # noqa: E402
from tests.edge.soak_support import SoakRun, print_header, print_minute, verdict  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--bundle", type=Path, help="a bundle to run (default: PP-LCNet FP32, converted)")
    parser.add_argument("--backlog", type=int, default=48, help="pictures kept waiting in the folder")
    parser.add_argument("--work", type=Path, help="folder for the broker, state and log (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-soak-"))
    bundle = args.bundle or lcnet_fp32_bundle(work / "bundle")
    count = max(1, round(args.minutes * 60 / args.interval))
    print(f"soak: {bundle} for {args.minutes:g} min, a sample every {args.interval:g} s; work folder {work}",
          flush=True)
    minutes = []
    with SoakRun(work, bundle, backlog=args.backlog) as run:
        print_header()
        for minute in run.samples(count, args.interval):
            minutes.append(minute)
            print_minute(minute)
            sys.stdout.flush()
    print(f"daemon exit code {run.exit_code}; {run.recycler.results} results, {run.recycler.errors} errors; "
          f"log {run.log_path}")
    if len(minutes) < count:
        print(f"verdict: FAIL: the daemon stopped after {len(minutes)} of {count} samples")
        return 1
    settle = max(1, round(5 * 60 / args.interval))       # the first 5 minutes, in samples
    result = verdict(minutes, settle=settle)
    print(result.line)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
