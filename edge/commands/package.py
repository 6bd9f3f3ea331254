"""`edge package BUNDLE -o NAME.edgepkg [--key K]` and `edge verify PKG [--trusted DIR]` (edge.packaging)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    package = sub.add_parser("package", help="pack a bundle into one signed .edgepkg file for devices")
    package.add_argument("bundle", type=Path, help="bundle folder (edge convert's output)")
    package.add_argument("-o", "--out", type=Path, required=True, help="package file to write (NAME.edgepkg)")
    package.add_argument("--key", help="signing key: a .key file or a key name in the keys folder "
                                       "(default: the key 'default'; edge keys generate makes it)")
    package.add_argument("--name", help="package name (default: the bundle's pipeline name)")
    package.add_argument("--version", help="package version (default: a digest of the bundle's files)")
    package.set_defaults(handler=make_package)
    verify = sub.add_parser("verify", help="check a package's signature and every file hash; unpacks nothing")
    verify.add_argument("package", type=Path, help="the .edgepkg file")
    verify.add_argument("--trusted", type=Path, action="append",
                        help="folder of trusted .pub files, or one .pub file (repeatable; default: "
                             "EDGE_TRUSTED_KEYS, /etc/edge/trusted-keys and this user's keys folder)")
    verify.add_argument("--json", action="store_true", help="print the verified manifest as JSON")
    verify.set_defaults(handler=verify_package_command)


def make_package(args: argparse.Namespace) -> int:
    from ..packaging.keys import keys_dir, load_private
    from ..packaging.package import build_package

    named = keys_dir() / f"{args.key or 'default'}.key"
    key_path = Path(args.key) if args.key and Path(args.key).is_file() else named
    key = load_private(key_path)
    manifest = build_package(args.bundle, args.out, key, name=args.name, version=args.version)
    print(f"package written: {args.out} ({manifest.name} {manifest.version}, {len(manifest.files)} files, "
          f"{manifest.total_bytes / 1e6:.1f} MB unpacked, {args.out.stat().st_size / 1e6:.1f} MB packed, "
          f"signed by key {key.id})")
    return 0


def verify_package_command(args: argparse.Namespace) -> int:
    from ..packaging.install import verify_package
    from ..packaging.keys import default_trusted_sources

    verified = verify_package(args.package, args.trusted or default_trusted_sources())
    manifest = verified.manifest
    if args.json:
        print(json.dumps(manifest.model_dump(mode="json"), indent=1))
    else:
        print(f"ok: {args.package}: {manifest.name} {manifest.version} ({manifest.task}), {len(manifest.files)} "
              f"files, {manifest.total_bytes / 1e6:.1f} MB, signed by trusted key {verified.key_id}")
    return 0
