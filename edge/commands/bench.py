"""`edge bench BUNDLE [--frames N] [--threads T] [--state-dir DIR] [--out DIR]`: measure every artifact of the
bundle that loads here and record the fastest that passes, for `edge run` and `edge infer` to use."""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from runtimes.bundle import Bundle

from ..daemon.config import default_state_dir
from ..device.bench import BenchOptions, bench
from ..device.record import record_path, write_record
from ..device.report import table, write_reports
from .paths import writable_folder
from .progress import reporter


def at_least(lowest: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lowest - 1
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {lowest}, not {text}")
        return value
    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="measure a bundle's artifacts on this device and choose the fastest "
                                          "that passes")
    parser.add_argument("bundle")
    parser.add_argument("--frames", type=at_least(1), default=20, help="timed frames per artifact (default 20)")
    parser.add_argument("--threads", type=at_least(0),
                        help="intra-op threads for every model, 0 the backend's default (default: the bundle's)")
    parser.add_argument("--device-id", default=socket.gethostname().split(".")[0] or "local",
                        help="names the default state folder, as `edge run --device-id` does")
    parser.add_argument("--state-dir", type=Path,
                        help="the daemon's state folder, where the choice is recorded (default "
                             "~/.local/state/edge/DEVICE_ID, as `edge run`)")
    parser.add_argument("--out", type=Path, help="where bench.md and bench.png go (default: beside the record)")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="measure on these pictures instead of the samples the bundle carries")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    # both checked before minutes of measuring, not when the record is written at the end
    state_dir = writable_folder(args.state_dir or default_state_dir(args.device_id), "--state-dir")
    if args.out:
        writable_folder(args.out, "--out")
    options = BenchOptions(frames=args.frames, threads=args.threads, state_dir=state_dir, pictures=args.images)
    record = bench(bundle, options, reporter(args.quiet))
    path = write_record(record, record_path(bundle, state_dir))
    md, png = write_reports(record, args.out or path.with_suffix(""))
    print(table(record))
    print()
    for choice in record.roles:
        print(f"{choice.role}: runs {choice.chosen}: {choice.reason}")
    if record.note:
        print(record.note)
    print(f"record: {path} (edge run and edge infer with this state folder use it)")
    print(f"report: {md}" + (f", chart {png}" if png else ""))
    if png is None:
        print("chart skipped: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    return 0
