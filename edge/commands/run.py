"""`edge run BUNDLE --source DIR --mqtt URL --device-id ID`: the on-device daemon."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run a bundle as a daemon: watch a source, publish results over MQTT")
    parser.add_argument("bundle")
    parser.add_argument("--source", required=True, help="folder to watch for images")
    parser.add_argument("--mqtt", required=True, help="broker URL, e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--device-id", required=True, help="this device's id (MQTT topic level and client id)")
    parser.add_argument("--pipeline", help="pipeline name in topics (default: the bundle's)")
    parser.set_defaults(handler=run_daemon_command)


def run_daemon_command(args: argparse.Namespace) -> int:
    from ..daemon.service import DaemonOptions, run_daemon

    fields = {"bundle": args.bundle, "source": args.source, "mqtt_url": args.mqtt, "device_id": args.device_id}
    if args.pipeline:
        fields["pipeline"] = args.pipeline
    return run_daemon(DaemonOptions(**fields))
