"""`edge convert SRC [SRC ...] --profile NAME|PATH [--calib DIR] [--val DIR] [-o OUT]`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .paths import bundle_output, writable_folder
from .progress import reporter


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("convert", help="convert Paddle exports / ONNX files into a bundle for a device")
    parser.add_argument("sources", nargs="+", metavar="SRC",
                        help="export folder (Paddle .pdmodel/.json + .pdiparams + metadata), .onnx file, or "
                             "zoo name (edge models list; downloaded once); several make one pipeline bundle "
                             "(e.g. OCR det cls rec, or the zoo group ppocrv4)")
    parser.add_argument("--profile", required=True, help="device profile name (edge profiles list) or YAML path")
    parser.add_argument("--calib", type=Path, help="folder of real images for INT8 calibration")
    parser.add_argument("--val", type=Path, help="folder of real images to judge artifacts on (default: every "
                                                 "second --calib picture, held out from calibration)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="bundle folder (default: bundles/<pipeline>)")
    parser.add_argument("--name", help="pipeline name in the manifest and MQTT topics")
    parser.add_argument("--workdir", type=Path, help="keep intermediate files here")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install a toolchain the profile needs (Paddle Lite opt, the ARM emulator); "
                             "fail with the command that installs it instead")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    # Imported here: converters need paddle/onnx, which a device running `edge run` does not have.
    import device_profiles
    from converters.builders import check_buildable
    from converters.pipeline import ConvertRequest, convert
    from converters.toolchains import needed_by, toolchain

    from ..zoo import resolve_sources
    from .models import download_progress

    progress = reporter(args.quiet)
    out = bundle_output(args.out or Path("bundles") / (args.name or "bundle"))   # before minutes of converting
    if args.workdir:
        writable_folder(args.workdir, "--workdir")
    profile = device_profiles.load(args.profile)
    check_buildable(profile)
    for name in needed_by(profile):      # provisioning happens here, once, never inside the conversion
        toolchain(name, progress).ensure(allow_install=not args.no_install)
    sources = resolve_sources(args.sources, progress=download_progress(args.quiet))   # zoo names -> folders
    result = convert(ConvertRequest(sources=sources, profile=args.profile, out=out, calib=args.calib,
                                    val=args.val, workdir=args.workdir, name=args.name,
                                    progress=progress))
    manifest = result["manifest"]
    if args.json:
        print(json.dumps({"bundle": result["bundle"], "manifest": manifest.model_dump(mode="json")}))
    else:
        for entry in manifest.models:
            art = entry.selected_artifact()
            print(f"{entry.role}: {art.path} ({art.precision}, {art.bytes / 1e6:.1f} MB) — {entry.decision}")
        print(f"bundle written: {result['bundle']}")
    return 0
