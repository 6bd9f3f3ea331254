"""`edge run CONFIG.yaml`, `edge run BUNDLE --source SRC --mqtt URL --device-id ID`: the on-device daemon.

Both forms build the same `DaemonConfig`; `--check` validates it and exits (0, or 2 with one line
naming file, line and field).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from runtimes.errors import ConfigError

# Flags that only the short form takes (a config file says all of this itself).
SHORT_FORM = ("source", "fps", "every", "transport", "mqtt_url", "device_id", "state_dir", "pipeline", "qos",
              "poll_interval", "drain_timeout", "metrics_interval", "ha_discovery", "ha_labels", "ha_image_interval",
              "ha_image_width")
SHORT_FORM_DEFAULTS = {"qos": 1, "poll_interval": 0.5, "drain_timeout": 10.0, "metrics_interval": 60.0,
                       "ha_discovery": False}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run", help="run bundles as a daemon: read sources, publish results over MQTT",
        description="edge run CONFIG.yaml | edge run BUNDLE --source SRC --mqtt URL --device-id ID [options]")
    parser.add_argument("target", type=Path, metavar="CONFIG_OR_BUNDLE",
                        help="a daemon config file (YAML), or a bundle folder for the short form")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--ha-cleanup", action="store_true",
                        help="remove this device's Home Assistant entities and retained state from the broker, "
                             "then exit (stop the daemon first)")
    short = parser.add_argument_group("short form (one pipeline, with BUNDLE)")
    short.add_argument("--source", help="folder, list:FILE, video file, camera:N, /dev/videoN, rtsp://..., "
                                        "serial:PORT?camera=N (see docs)")
    short.add_argument("--fps", type=float, help="video, camera, stream: take about this many frames a second "
                                                 "(default: every frame, at the camera's rate)")
    short.add_argument("--every", type=int, metavar="N", help="video, camera, stream: take every Nth frame")
    short.add_argument("--transport", choices=("tcp", "udp"), help="RTSP streams: how frames travel (default tcp)")
    short.add_argument("--mqtt", dest="mqtt_url", help="broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    short.add_argument("--device-id", help="this device's name in topics (and its MQTT client id)")
    short.add_argument("--state-dir", type=Path, help="spool and ledger (default ~/.local/state/edge/ID)")
    short.add_argument("--pipeline", help="pipeline name in topics (default: the bundle's)")
    short.add_argument("--qos", type=int, choices=(0, 1, 2), help="MQTT QoS of results (default 1)")
    short.add_argument("--poll-interval", type=float,
                       help="seconds between looks at an idle folder or list (0.5; live sources wake it per frame)")
    short.add_argument("--drain-timeout", type=float, help="seconds to wait for the broker's acks when stopping (10)")
    short.add_argument("--metrics-interval", type=float, help="seconds between metrics messages, 0 for none (60)")
    short.add_argument("--ha-discovery", action="store_true", default=None,
                       help="publish Home Assistant discovery configs")
    short.add_argument("--ha-labels", type=_labels, metavar="LABEL,...",
                       help="Home Assistant: a count sensor per label, e.g. person,car")
    short.add_argument("--ha-image-interval", type=float, metavar="S",
                       help="Home Assistant: seconds between annotated frames of the image entity, 0 for none (2)")
    short.add_argument("--ha-image-width", type=int, metavar="PX",
                       help="Home Assistant: the image entity's frames are at most this wide (640)")
    parser.set_defaults(handler=run_daemon_command)


def _labels(text: str) -> list[str]:
    return [label.strip() for label in text.split(",") if label.strip()]


def config_from_args(args: argparse.Namespace):
    """The DaemonConfig the arguments describe (either form); ConfigError when they do not fit."""
    from ..daemon.config import load_daemon_config, short_form_config

    given = [name for name in SHORT_FORM if getattr(args, name) is not None]
    if args.target.is_dir():
        missing = [flag for flag, name in (("--source", "source"), ("--mqtt", "mqtt_url"),
                                           ("--device-id", "device_id")) if getattr(args, name) is None]
        if missing:
            raise ConfigError(f"the short form needs {', '.join(missing)} (or give a config file instead of "
                              f"the bundle folder {args.target})")
        values = {name: getattr(args, name) for name in given}
        return short_form_config(bundle=args.target, **{**SHORT_FORM_DEFAULTS, **values})
    if given:
        flags = ", ".join("--" + name.replace("_", "-").replace("mqtt-url", "mqtt") for name in given)
        raise ConfigError(f"{args.target} is a config file; {flags} belong to the short form "
                          "(put them in the file)")
    if not args.target.exists():
        raise ConfigError(f"no config file or bundle folder at {args.target}")
    return load_daemon_config(args.target)


def run_daemon_command(args: argparse.Namespace) -> int:
    from ..daemon.service import run_daemon

    config = config_from_args(args)
    if args.check:
        pipelines = ", ".join(f"{p.name} ({p.source.type})" for p in config.pipelines)
        print(f"{args.target}: ok: device {config.device_id}, {len(config.pipelines)} pipeline(s): {pipelines}")
        return 0
    if args.ha_cleanup:
        from ..daemon.ha_cleanup import cleanup_command

        return cleanup_command(config)
    return run_daemon(config)
