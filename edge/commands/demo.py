"""`edge demo`: convert the PP-OCR model for this machine, run the daemon, show the MQTT messages."""
from __future__ import annotations

import argparse
from pathlib import Path

from .paths import writable_folder
from .progress import reporter


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="the main job end to end, offline (needs mosquitto installed)")
    parser.add_argument("--workdir", type=Path, default=Path("demo-out"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(writable_folder(args.workdir, "--workdir"), reporter(False))
