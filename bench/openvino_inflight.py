"""Does running several frames in flight raise OpenVINO's throughput on this machine? (issue 11)

For PicoDet-S-320 COCO and PP-OCRv4 det, IRs made here from the shared Paddle exports, images per second of:
  sync        one infer request, called synchronously (what runtimes/backends/openvino.py does);
  async<J>    an AsyncInferQueue with J jobs (J frames in flight),
each compiled with the LATENCY hint (one stream using every core) and with the THROUGHPUT hint (OpenVINO picks
the streams: on 2 cores, 2 streams of 1 thread). Two loops per mode:
  model       the preprocessed tensors fed again and again: the runtime alone;
  frame       each frame decoded (JPEG/PNG bytes in memory) and preprocessed by the bundle's own
              Preprocess chain in the loop, as the daemon does before inference: in flight, the Python work
              of the next frame can overlap the inference of the previous one. (Post-processing is left out.)
Outputs are copied out of the request in every mode, as a caller must. Threads: OpenVINO's default (all cores).

Each measurement runs for --seconds after one warm-up; rounds alternate the order of the modes (the machine is
shared); medians over the rounds are printed, and each mode's ratio to `sync` with the LATENCY hint.
Run it alone: `flock /tmp/heavy.lock python bench/openvino_inflight.py [--rounds 5] [--seconds 1.5]
[--precisions f32,bf16]`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import openvino as ov

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.sources import load_source  # noqa: E402
from runtimes.tasks.preprocess import Preprocess  # noqa: E402

SHARED = ROOT.parent / "shared"
MODELS = {  # name -> (Paddle export, real pictures it is fed)
    "PicoDet-S-320 COCO": (SHARED / "models/PP-PicoDet/picodet_s_320_coco",
                           ["coco_bus.jpg", "det_000000014439.jpg", "coco_dog.jpg", "coco_zidane.jpg"]),
    "PP-OCRv4 det": (SHARED / "models/PP-OCR/ch_PP-OCRv4_det",
                     ["ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg", "det_layout.jpg"]),
}
MODES = [("sync", "LATENCY", 0), ("async2", "LATENCY", 2), ("async4", "LATENCY", 4),
         ("sync", "THROUGHPUT", 0), ("async2", "THROUGHPUT", 2), ("async4", "THROUGHPUT", 4)]

Feed = Callable[[], np.ndarray]


def make_ir(export: Path, folder: Path) -> tuple[Path, Preprocess]:
    source = load_source(export)
    xml = folder / f"{source.spec.role}.xml"
    ov.save_model(ov.convert_model(str(source.model_file)), str(xml), compress_to_fp16=False)
    return xml, Preprocess(source.spec.preprocess)


def feeds(preprocess: Preprocess, pictures: list[str]) -> dict[str, Feed]:
    """'model': the preprocessed tensors in turn; 'frame': decode + preprocess a picture each call."""
    encoded = [np.frombuffer((SHARED / "images" / name).read_bytes(), np.uint8) for name in pictures]
    tensors = [preprocess(cv2.imdecode(data, cv2.IMREAD_COLOR))[0] for data in encoded]
    counter = {"model": 0, "frame": 0}

    def model() -> np.ndarray:
        counter["model"] += 1
        return tensors[counter["model"] % len(tensors)]

    def frame() -> np.ndarray:
        counter["frame"] += 1
        return preprocess(cv2.imdecode(encoded[counter["frame"] % len(encoded)], cv2.IMREAD_COLOR))[0]

    return {"model": model, "frame": frame}


class Sync:
    def __init__(self, compiled: ov.CompiledModel):
        self.request = compiled.create_infer_request()      # once, reused, as the backend does

    def run(self, feed: Feed, seconds: float, most: int = 1 << 30) -> float:
        frames, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds and frames < most:
            result = self.request.infer({0: feed()}, share_inputs=True)
            _ = [result[i] for i in range(len(result))]     # copies (share_outputs off)
            frames += 1
        return frames / (time.perf_counter() - start)


class Async:
    def __init__(self, compiled: ov.CompiledModel, jobs: int):
        self.queue = ov.AsyncInferQueue(compiled, jobs)
        self.done = 0
        self.queue.set_callback(self._finished)

    def _finished(self, request: ov.InferRequest, userdata: Any) -> None:
        _ = [tensor.data.copy() for tensor in request.output_tensors]   # copied before the job is reused
        self.done += 1

    def run(self, feed: Feed, seconds: float, most: int = 1 << 30) -> float:
        self.done, started, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds and started < most:
            started += 1
            tensor = feed()
            # userdata keeps the array alive while the job reads it in place (share_inputs)
            self.queue.start_async({0: tensor}, tensor, share_inputs=True)    # blocks while every job is busy
        self.queue.wait_all()
        return self.done / (time.perf_counter() - start)


def compiled_runners(core: ov.Core, xml: Path, precision: str) -> tuple[dict[str, Sync | Async], dict[str, str]]:
    runners, notes = {}, {}
    for name, hint, jobs in MODES:
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
        compiled = core.compile_model(str(xml), "CPU", config)
        key = f"{name} {hint}"
        runners[key] = Async(compiled, jobs) if jobs else Sync(compiled)
        notes[hint] = (f"{compiled.get_property('NUM_STREAMS')} stream(s), "
                       f"{compiled.get_property('INFERENCE_NUM_THREADS')} threads, optimal requests "
                       f"{compiled.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS')}, runs "
                       f"{compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()}")
    return runners, notes


def measure(runners: dict[str, Sync | Async], loops: dict[str, Feed], rounds: int, seconds: float,
            warmup: int) -> dict[tuple[str, str], list[float]]:
    rates: dict[tuple[str, str], list[float]] = {}
    order = [(mode, loop) for loop in loops for mode in runners]
    for mode, loop in order:       # warm-up: every input shape on every stream (new shapes compile kernels)
        runners[mode].run(loops[loop], float("inf"), warmup)
    for r in range(rounds):
        shift = r % len(order)
        turn = order[shift:] + order[:shift]
        for mode, loop in (turn if r % 2 == 0 else turn[::-1]):
            rates.setdefault((mode, loop), []).append(runners[mode].run(loops[loop], seconds))
    return rates


def report(title: str, notes: dict[str, str], rates: dict[tuple[str, str], list[float]]) -> None:
    print(f"\n## {title}")
    for hint, note in notes.items():
        print(f"  {hint}: {note}")
    print(f"  {'mode':<20} {'loop':<6} {'images/s (median)':>17} {'vs sync LATENCY':>16}   rounds")
    for (mode, loop), values in rates.items():
        base = statistics.median(rates[("sync LATENCY", loop)])
        med = statistics.median(values)
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {mode:<20} {loop:<6} {med:>17.1f} {med / base:>16.2f}   {spread}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument("--precisions", default="f32,bf16", help="INFERENCE_PRECISION_HINT values to run")
    args = parser.parse_args()
    core = ov.Core()
    print(f"OpenVINO {ov.get_version()}, {core.get_property('CPU', 'FULL_DEVICE_NAME')}, "
          f"{len(os.sched_getaffinity(0))} cores; {args.rounds} rounds of {args.seconds} s each")
    with tempfile.TemporaryDirectory() as tmp:
        for title, (export, pictures) in MODELS.items():
            xml, preprocess = make_ir(export, Path(tmp))
            loops = feeds(preprocess, pictures)
            shapes = sorted({tuple(loops["model"]().shape) for _ in pictures})
            for precision in args.precisions.split(","):
                runners, notes = compiled_runners(core, xml, precision)
                rates = measure(runners, loops, args.rounds, args.seconds, warmup=4 * 4 * len(pictures))
                report(f"{title}, {precision}, inputs {shapes}", notes, rates)
                del runners
    return 0


if __name__ == "__main__":
    sys.exit(main())
