"""`edge profiles list|show NAME|validate FILE`."""
from __future__ import annotations

import argparse

import yaml

import device_profiles


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


def list_profiles(args: argparse.Namespace) -> int:
    detected = device_profiles.detect().name
    for profile in device_profiles.load_all():
        mark = "*" if profile.name == detected else " "
        artifacts = ", ".join(a.label() for a in profile.artifacts)
        print(f"{mark} {profile.name:<12} {profile.arch:<7} {profile.accelerator:<4} {artifacts}")
    print(f"(* = this machine: {detected})")
    return 0


def show_profile(args: argparse.Namespace) -> int:
    profile = device_profiles.load(args.name)
    print(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False, allow_unicode=True), end="")
    return 0


def validate_profile(args: argparse.Namespace) -> int:
    profile = device_profiles.load(args.file)
    print(f"{args.file}: valid profile '{profile.name}' ({len(profile.artifacts)} artifacts)")
    return 0
