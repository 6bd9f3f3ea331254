"""`edge ota push PKG --device ID | --group NAME [--canary N] [--url URL] --mqtt URL`: update devices over
MQTT (edge.ota; docs/ota.md). Exit 0 when every device ended `done`, 1 when one did not, 2 on a usage error."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .progress import reporter


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ota", help="update devices over the air (signed package, A/B slots, rollback)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    push = actions.add_parser("push", help="offer a package to a device or a group and serve it")
    push.add_argument("package", type=Path, help="a signed .edgepkg (edge package)")
    who = push.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", action="append", help="device id (repeatable)")
    who.add_argument("--group", help="every device whose daemon config says group: NAME")
    push.add_argument("--canary", type=int, default=1, help="with --group: update this many first (default 1)")
    push.add_argument("--url", help="devices fetch the package from this HTTP(S) URL instead of over MQTT")
    push.add_argument("--mqtt", required=True, help="broker URL, mqtt[s]://HOST[:PORT]")
    push.add_argument("--username", help="the operator's broker user (its ACL may publish OTA commands)")
    push.add_argument("--password-env", help="environment variable holding that user's password")
    push.add_argument("--ca", type=Path, help="CA file for mqtts://")
    push.add_argument("--cert", type=Path, help="client certificate for mqtts://")
    push.add_argument("--key", type=Path, help="its private key")
    push.add_argument("--chunk-kb", type=int, default=256, help="chunk size in KiB (default 256)")
    push.add_argument("--timeout", type=float, default=900.0, help="seconds to wait per stage (default 900)")
    push.add_argument("--json", action="store_true", help="print the outcome as JSON")
    push.add_argument("--quiet", action="store_true", help="no progress lines")
    push.set_defaults(handler=push_command)


def _broker(args: argparse.Namespace):
    from ..daemon.config import BrokerConfig

    data = {"url": args.mqtt, "username": args.username, "password_env": args.password_env}
    if args.ca or args.cert:
        data["tls"] = {"ca": args.ca, "cert": args.cert, "key": args.key}
    try:
        return BrokerConfig.model_validate({k: v for k, v in data.items() if v is not None})
    except ValueError as err:
        from runtimes.errors import ConfigError
        first = err.errors()[0]     # a pydantic ValidationError
        flag = {"url": "--mqtt", "tls": "--ca/--cert/--key"}.get(str(first["loc"][0]), "--" + str(first["loc"][0]))
        raise ConfigError(first["msg"], field=flag.replace("_", "-")) from None


def push_command(args: argparse.Namespace) -> int:
    from runtimes.errors import ConfigError

    from ..ota.operator import Offer, Operator
    from ..ota.rollout import group_members, roll_out

    if args.canary < 0:
        raise ConfigError("must be 0 or more", field="--canary")
    report = reporter(args.quiet)
    offer = Offer.of(args.package, args.chunk_kb * 1024, args.url)
    report(f"{offer.body['name']} {offer.body['version']}: {offer.body['size'] / 1e6:.1f} MB, "
           f"offer {offer.body['offer']}")
    with Operator(_broker(args), report) as operator:
        if args.group:
            devices = group_members(operator, args.group)
            if not devices:
                raise ConfigError(f"no device announces group '{args.group}' on {args.mqtt}", field="--group")
            report(f"group {args.group}: {', '.join(devices)}")
        else:
            devices = list(dict.fromkeys(args.device))
        plan = roll_out(operator, offer, devices, args.canary if args.group else 0, args.timeout)
    outcome = {d: (plan.results[d].outcome or "no answer") if d in plan.results else "not offered" for d in devices}
    if args.json:
        print(json.dumps({"offer": offer.body, "devices": outcome, "stopped": plan.stopped,
                          "wire_bytes": operator.wire.bytes}, indent=1))
    else:
        for device, state in outcome.items():
            error = (plan.results[device].state or {}).get("error") if device in plan.results else None
            refused = plan.results[device].refused if device in plan.results else None
            print(f"{device}: {state}" + (f" ({error or refused})" if error or refused else ""))
        if plan.stopped:
            print(f"rollout stopped: {plan.stopped}")
    return 0 if plan.ok else 1
