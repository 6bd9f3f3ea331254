"""`edge profiles list|show NAME|validate FILE|detect`."""
from __future__ import annotations

import argparse
import json

import yaml

import device_profiles
from runtimes.errors import EdgeError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("profiles", help="list, show and validate device profiles")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the shipped profiles").set_defaults(handler=list_profiles)
    show = actions.add_parser("show", help="one profile in full")
    show.add_argument("name", help="profile name or path to a profile YAML")
    show.set_defaults(handler=show_profile)
    validate = actions.add_parser("validate", help="check a profile YAML file of your own")
    validate.add_argument("file")
    validate.set_defaults(handler=validate_profile)
    detect = actions.add_parser("detect", help="which shipped profile fits this machine, and why")
    detect.add_argument("--json", action="store_true", help="print one JSON object (profile, reasons, ...)")
    detect.add_argument("--root", default="/", metavar="DIR",
                        help="read proc/ and etc/ under DIR instead of / (e.g. a mounted SD card image)")
    detect.add_argument("--machine", metavar="ARCH",
                        help="CPU architecture to assume, e.g. aarch64 (default: this machine's)")
    detect.set_defaults(handler=show_detection)


def list_profiles(args: argparse.Namespace) -> int:
    try:
        detected = this_machine = device_profiles.detect_profile().profile
    except EdgeError as err:   # a machine no profile is for still gets the list
        detected, this_machine = None, f"none fits ({err})"
    for profile in device_profiles.load_all():
        mark = "*" if profile.name == detected else " "
        artifacts = ", ".join(a.label() for a in profile.artifacts)
        family = f"  [family: {', '.join(profile.members)}]" if profile.members else ""
        print(f"{mark} {profile.name:<12} {profile.arch:<7} {profile.accelerator:<4} {artifacts}{family}")
    print(f"(* = this machine: {this_machine}; a family name builds what every member runs;"
          " `edge profiles detect` says why)")
    return 0


def show_detection(args: argparse.Namespace) -> int:
    found = device_profiles.detect_profile(root=args.root, machine=args.machine)
    if args.json:
        print(json.dumps(found.as_json(), ensure_ascii=False))
        return 0
    profile = device_profiles.load(found.profile)
    print(f"{found.profile}{' (a guess)' if found.guess else ''}: {profile.description}")
    print("why:")
    for reason in found.reasons:
        print(f"  - {reason}")
    return 0


# What a device needs installed to load each artifact format (docs/raspberry-pi.md says how on a Pi).
DEVICE_BACKENDS = {"onnx": "onnxruntime (pip install \"pp-edge[device]\")",
                   "openvino": "OpenVINO (pip install \"pp-edge[openvino]\")",
                   "paddle_lite": "Paddle Lite's runtime for the device (ARM: the official prebuilt library and "
                                  "its Python module; see docs/raspberry-pi.md)"}


def show_profile(args: argparse.Namespace) -> int:
    profile = device_profiles.load(args.name)
    print(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False, allow_unicode=True), end="")
    where = f"a {profile.name} device" if not profile.members else f"every {'/'.join(profile.members)} device"
    print(f"# what {where} loads, in order of preference, and the backend each needs:")
    for choice in profile.artifacts:
        print(f"#   {choice.label():<32} {DEVICE_BACKENDS[choice.format]}")
    return 0


def validate_profile(args: argparse.Namespace) -> int:
    profile = device_profiles.load(args.file)
    print(f"{args.file}: valid profile '{profile.name}' ({len(profile.artifacts)} artifacts)")
    return 0
