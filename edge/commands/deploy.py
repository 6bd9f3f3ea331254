"""`edge deploy PKG --rootfs DIR | --image FILE.img | --ssh user@host[:port]` (edge.deploy)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..deploy import TARGETS

    parser = sub.add_parser("deploy", help="install a signed package onto a device: a mounted root filesystem, "
                                           "an SD-card image file, or over ssh")
    parser.add_argument("package", type=Path, help="the .edgepkg file (edge package)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--rootfs", type=Path, metavar="DIR", help="a root filesystem: a mounted SD card, or /")
    where.add_argument("--image", type=Path, metavar="FILE.img",
                       help="an unmounted disk image (Raspberry Pi OS): the package and a first-boot step go "
                            "into its FAT boot partition; no root or loop devices needed")
    where.add_argument("--ssh", metavar="USER@HOST[:PORT]", help="a running device reachable over ssh")
    parser.add_argument("--trusted", type=Path, metavar="KEY.pub",
                        help="the public key the device is to trust (default: your own, from edge keys)")
    config = parser.add_argument_group("daemon config (default: kept if the target has one, else written)")
    config.add_argument("--mqtt", metavar="URL", help="broker URL (default mqtt://localhost:1883)")
    config.add_argument("--device-id", help="device id (default: the target's hostname)")
    config.add_argument("--source", help="what the daemon reads (default: the folder /var/lib/edge/incoming)")
    config.add_argument("--python", help="the python the service runs on the target (absolute path)")
    config.add_argument("--force", action="store_true", help="replace a different existing config or unit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    for name, target in TARGETS.items():
        target.add_arguments(parser.add_argument_group(f"with --{name}"))
    parser.set_defaults(handler=deploy_command)


def deploy_command(args: argparse.Namespace) -> int:
    from ..deploy import TARGETS, DeployRequest, default_trusted_key
    from .progress import reporter

    name = next(name for name in TARGETS if getattr(args, name) is not None)
    target = TARGETS[name]
    request = DeployRequest(package=args.package, trusted_key=args.trusted or default_trusted_key(),
                            device_id=args.device_id, mqtt=args.mqtt, source=args.source, python=args.python,
                            force=args.force)
    for line in target.deploy(request, target.options_from_args(args), say=reporter(args.quiet)):
        print(line)
    return 0
