"""`edge service install --config CONFIG.yaml [--root DIR]`: run the daemon as a systemd service."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("service", help="install the daemon as a systemd service")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser("install", help="write the systemd unit and the config into a root filesystem")
    install.add_argument("--config", required=True, type=Path, help="the daemon config (checked first)")
    install.add_argument("--root", type=Path, default=Path("/"),
                         help="root filesystem to write into: / (default) or a mounted SD-card image's root")
    install.add_argument("--force", action="store_true", help="replace a different existing unit or config")
    install.add_argument("--no-enable", dest="enable", action="store_false",
                         help="do not link the unit into multi-user.target.wants")
    install.add_argument("--python", help="python on the target system (default: this one for /, "
                                          "/usr/bin/python3 for another root)")
    install.add_argument("--watchdog-sec", type=int, default=60, help="systemd watchdog timeout (default 60)")
    install.add_argument("--restart-sec", type=int, default=5, help="pause before a restart (default 5)")
    install.set_defaults(handler=install_service)


def install_service(args: argparse.Namespace) -> int:
    from ..service_install import UnitOptions, default_python, install

    options = UnitOptions(python=args.python or default_python(args.root), watchdog_sec=args.watchdog_sec,
                          restart_sec=args.restart_sec)
    report = install(args.config, args.root, force=args.force, enable=args.enable, options=options)
    for line in report.lines():
        print(line)
    if report.root.resolve() == Path("/"):
        print("next: systemd-sysusers && systemctl daemon-reload && systemctl restart edge")
    else:
        print(f"the service starts at the next boot of the system in {report.root}")
    return 0
