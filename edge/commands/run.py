"""`edge run BUNDLE --source DIR --mqtt URL --device-id ID`: the on-device daemon."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..daemon.service import add_run_arguments

    parser = sub.add_parser("run", help="run a bundle as a daemon: watch a source, publish results over MQTT")
    add_run_arguments(parser)
    parser.set_defaults(handler=run_daemon_command)


def run_daemon_command(args: argparse.Namespace) -> int:
    from ..daemon.service import options_from_args, run_daemon

    return run_daemon(options_from_args(args))
