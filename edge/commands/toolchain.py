"""`edge toolchain install NAME [--force] | status [--json] | remove NAME`: the tools edge provisions.

Conversion for some profiles needs tools that are not Python packages of edge itself (Paddle Lite's
`opt` in a Python of its own, an emulated aarch64 root); `edge convert` installs them on first use,
and these commands let a user do it ahead of time, check them, or free the space. `converters` is
imported only when a command runs: a device installs edge without the converter side.
"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from runtimes.errors import EdgeError
from runtimes.toolpaths import toolchain_dir

from .progress import reporter

if TYPE_CHECKING:
    from converters.toolchains import Toolchain, ToolchainStatus

NAMES = "paddle-lite, arm-emulator"     # for --help only; converters.toolchains.TOOLCHAINS is the list


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("toolchain", help=f"install, check and remove the tools conversion needs ({NAMES})")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser("install", help="install a toolchain (cached; does nothing when it works)")
    install.add_argument("name", help=NAMES)
    install.add_argument("--force", action="store_true", help="rebuild it even when it works")
    install.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    install.set_defaults(handler=install_toolchain)
    status = actions.add_parser("status", help="every toolchain: installed or not, versions, where")
    status.add_argument("--json", action="store_true", help="one JSON list instead of one line each")
    status.set_defaults(handler=show_status)
    remove = actions.add_parser("remove", help="delete an installed toolchain")
    remove.add_argument("name", help=NAMES)
    remove.set_defaults(handler=remove_toolchain)


def _registry():
    try:
        import converters.toolchains as registry
    except ImportError as err:
        raise EdgeError(f"toolchains are for converting, and this edge has no converter side ({err}): "
                        "pip install \"pp-edge[convert]\"") from None
    return registry


def _open(name: str, quiet: bool = True) -> "Toolchain":
    registry = _registry()
    try:
        return registry.toolchain(name, reporter(quiet))
    except (ImportError, AttributeError) as err:   # a registered toolchain this edge does not ship (yet)
        raise registry.ToolchainError(f"this edge has no installer for '{name}': {err}") from None


def install_toolchain(args: argparse.Namespace) -> int:
    tool = _open(args.name, args.quiet)
    before = tool.status()
    if before.installed and not args.force:
        print(f"{tool.name}: already installed: {before.detail} ({before.path})")
        return 0
    done = tool.install(force=args.force)
    print(f"{tool.name}: installed: {done.detail} ({done.path})")
    return 0


def _status(name: str) -> "ToolchainStatus":
    registry = _registry()
    try:
        return _open(name).status()
    except registry.ToolchainError as err:
        return registry.ToolchainStatus(name, False, toolchain_dir(name), f"unavailable: {err}")


def show_status(args: argparse.Namespace) -> int:
    statuses = [_status(name) for name in _registry().TOOLCHAINS]
    if args.json:
        print(json.dumps([{"name": s.name, "installed": s.installed, "path": str(s.path), "detail": s.detail,
                           "info": s.info} for s in statuses], indent=1))
        return 0
    for s in statuses:
        print(f"{s.name:<14} {'installed' if s.installed else 'missing':<9} {s.detail}  [{s.path}]")
    return 0


def remove_toolchain(args: argparse.Namespace) -> int:
    tool = _open(args.name)
    print(f"{tool.name}: removed {tool.path}" if tool.remove() else f"{tool.name}: was not installed")
    return 0
