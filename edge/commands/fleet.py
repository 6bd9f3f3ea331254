"""`edge fleet ls|watch`: every device on a broker, from its retained status, description, metrics and OTA state.

`ls` takes the retained messages (waiting up to --settle seconds for them) and prints one table or
JSON array; `watch` keeps listening and redraws the table as devices change (with --json: one JSON
line per device change). Read-only: the fleet view publishes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SETTLE_S = 3.0
REDRAW_S = 1.0          # `watch` redraws at least this often: "last seen" ages move on their own


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("fleet", help="see every device on a broker: online, bundles, fps, spool, OTA")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="print the fleet once")
    watch = actions.add_parser("watch", help="a live table of the fleet (Ctrl-C ends it)")
    for action in (ls, watch):
        where = action.add_mutually_exclusive_group(required=True)
        where.add_argument("--mqtt", dest="mqtt_url", help="broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        where.add_argument("--broker", type=Path, metavar="FILE.yaml",
                           help="broker settings as in the daemon config's `broker:` (url, tls, username, "
                                "password_env)")
        action.add_argument("--device", action="append", metavar="ID",
                            help="only this device (repeat for more); needed on brokers that send retained "
                                 "messages only to exact topics (RabbitMQ)")
        action.add_argument("--settle", type=float, default=SETTLE_S, metavar="S",
                            help=f"seconds to wait at most for the retained messages (default {SETTLE_S:.0f})")
        action.add_argument("--json", action="store_true",
                            help="JSON instead of a table (watch: one line per device change)")
    ls.set_defaults(handler=list_fleet)
    watch.set_defaults(handler=watch_fleet)


def broker_settings(args: argparse.Namespace):
    from runtimes.errors import ConfigError

    from ..daemon.config import BrokerConfig, load_broker_config
    from ..daemon.contract import check_topic_segment

    for device in args.device or ():
        check_topic_segment(device, "device")
    if args.broker is not None:
        return load_broker_config(args.broker)
    try:
        return BrokerConfig(url=args.mqtt_url)
    except ValueError as err:       # pydantic's ValidationError is a ValueError
        raise ConfigError(f"--mqtt {args.mqtt_url}: {err.errors()[0]['msg']}") from None


def list_fleet(args: argparse.Namespace) -> int:
    from ..fleet.listener import FleetListener
    from ..fleet.table import fleet_table, rows_json, summary

    with FleetListener(broker_settings(args), args.device) as listener:
        listener.settle(args.settle)
    rows = listener.fleet.rows()
    if args.json:
        print(rows_json(rows))
    elif rows:
        _console().print(fleet_table(rows, caption=summary(rows)))
    else:
        where = "the named devices' topics" if args.device else "edge/+/..."
        print(f"no devices: nothing retained on {where} at {listener.broker.url} within {args.settle:g} s "
              "(a broker that sends retained messages to exact topics only, like RabbitMQ, needs --device ID)")
    return 0


def watch_fleet(args: argparse.Namespace) -> int:
    from ..fleet.listener import FleetListener

    show = _watch_json if args.json else _watch_table
    with FleetListener(broker_settings(args), args.device) as listener:
        try:
            listener.settle(args.settle)
            show(listener)
        except KeyboardInterrupt:       # Ctrl-C is how a watch ends, not a failure
            pass
    return 0


def _watch_json(listener) -> None:
    from ..fleet.table import row_json_line

    for row in listener.fleet.rows():
        print(row_json_line(row), flush=True)
    while True:
        for device in listener.poll(REDRAW_S):
            print(row_json_line(listener.fleet.devices[device].row()), flush=True)


def _watch_table(listener) -> None:
    from rich.live import Live

    from ..fleet.table import fleet_table, summary

    def draw():
        rows = listener.fleet.rows()
        state = "" if listener.connected else " | broker connection lost, reconnecting"
        return fleet_table(rows, caption=f"{summary(rows)} | {listener.broker.url}{state} | "
                                         f"{time.strftime('%H:%M:%S')} | Ctrl-C ends")

    with Live(draw(), console=_console(), auto_refresh=False) as live:
        while True:
            listener.poll(REDRAW_S)
            live.update(draw(), refresh=True)


def _console():
    from rich.console import Console

    # Piped into a file or another program, rich would cut the table to 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=200, no_color=True)
