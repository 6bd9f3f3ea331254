"""`edge infer BUNDLE IMAGE [IMAGE ...] [--json]`: one-shot inference, same objects the daemon publishes."""
from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

import cv2

from runtimes.bundle import Bundle
from runtimes.errors import EdgeError, one_line
from runtimes.image import read_image
from runtimes.tasks import load_task

from ..daemon.config import default_state_dir
from ..daemon.contract import result_message
from ..device.context import device_context
from ..drawing import draw
from .paths import writable_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("infer", help="run a bundle on images and print the results")
    parser.add_argument("bundle")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--json", action="store_true", help="one JSON object per image (edge.result/1)")
    parser.add_argument("--device-id", default=socket.gethostname().split(".")[0] or "local")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                        help="run these artifacts of the bundle instead of the ones it selected (or edge bench chose)")
    parser.add_argument("--state-dir", type=Path,
                        help="the daemon's state folder: its caches and the artifacts `edge bench` chose there "
                             "(default ~/.local/state/edge/DEVICE_ID, as `edge run`)")
    parser.add_argument("--draw", type=Path, metavar="OUT",
                        help="draw the results: into a folder (one IMAGE.jpg per image; an existing folder or "
                             "a name without a suffix), or, for one IMAGE, an image file such as out.jpg")
    parser.set_defaults(handler=run_infer)


def drawing_target(target: Path, many: bool) -> tuple[Path, bool]:
    """(where, is_folder), checked before any inference: a folder takes one drawing per image."""
    if many or target.is_dir() or not target.suffix:
        return writable_folder(target, "--draw"), True
    if not cv2.haveImageWriter(str(target)):
        raise EdgeError(f"--draw {target}: not a picture name this system can write (use .jpg or .png), "
                        "nor a folder")
    writable_folder(target.parent, "--draw", given=target)
    return target, False


def save_drawing(target: Path, folder: bool, image_path: str, task: str, image, results) -> None:
    out = target / f"{Path(image_path).stem}.jpg" if folder else target
    try:
        written = cv2.imwrite(str(out), draw(task, image, results))
    except cv2.error:
        written = False
    if not written:
        raise EdgeError(f"cannot write the drawing to {out}")


def run_infer(args: argparse.Namespace) -> int:
    draw_to = drawing_target(args.draw, len(args.images) > 1) if args.draw else None
    bundle = Bundle.open(args.bundle)
    if args.precision:
        bundle = bundle.with_precision(args.precision)
    state_dir = args.state_dir or default_state_dir(args.device_id)
    task = load_task(bundle, device_context(bundle, state_dir, use_record=not args.precision))
    failures = 0
    for seq, image_path in enumerate(args.images, start=1):
        try:
            image = read_image(image_path)
            output = task(image)
        except EdgeError as err:   # one bad image must not hide the others' results
            print(f"edge infer: error: {one_line(str(err))}", file=sys.stderr)
            failures += 1
            continue
        if draw_to:
            save_drawing(*draw_to, image_path, bundle.manifest.task, image, output.results)
        message = result_message(device=args.device_id, pipeline=bundle.manifest.pipeline, models=task.models,
                                 source=str(image_path), seq=seq, latency_ms=output.timings.as_dict(),
                                 results=output.results)
        if args.json:
            print(json.dumps(message, ensure_ascii=False), flush=True)
        else:
            print(f"{image_path}: {len(output.results)} result(s) in "
                  f"{sum(message['latency_ms'].values()):.1f} ms")
            for item in output.results:
                print("  " + json.dumps(item, ensure_ascii=False))
    return 2 if failures else 0
