"""`edge keys generate|show`: the operator's ed25519 key pair that signs packages (edge.packaging.keys)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="create and show the ed25519 key that signs packages")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser("generate", help="create a key pair (NAME.key private, NAME.pub public)")
    generate.add_argument("--name", default="default", help="key name (default: default)")
    generate.add_argument("--dir", type=Path, help="keys folder (default: EDGE_KEYS_DIR or ~/.config/edge/keys)")
    generate.add_argument("--force", action="store_true", help="replace an existing key of that name")
    generate.set_defaults(handler=generate_key)
    show = actions.add_parser("show", help="print a key's id and the public line devices trust")
    show.add_argument("--name", default="default", help="key name (default: default)")
    show.add_argument("--dir", type=Path, help="keys folder (default: EDGE_KEYS_DIR or ~/.config/edge/keys)")
    show.add_argument("--key", type=Path, help="a private key file instead of --name/--dir")
    show.set_defaults(handler=show_key)


def _print(pair, created: bool) -> None:
    from ..packaging.keys import public_line

    print(f"key {pair.name}: id {pair.id}" + (" (new)" if created else ""))
    print(f"private key: {pair.private_path}  (keep it on this machine only)")
    print(f"public key:  {pair.public_path}")
    print(public_line(pair.public, f"edge:{pair.name}"))
    print("devices trust it once this line is in a .pub file of their trusted-keys folder "
          "(/etc/edge/trusted-keys)")


def generate_key(args: argparse.Namespace) -> int:
    from ..packaging.keys import generate

    _print(generate(args.name, args.dir, force=args.force), created=True)
    return 0


def show_key(args: argparse.Namespace) -> int:
    from ..packaging.keys import keys_dir, load_private

    path = args.key or (args.dir or keys_dir()) / f"{args.name}.key"
    _print(load_private(path), created=False)
    return 0
