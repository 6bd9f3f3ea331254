"""An ARM ONNX artifact executed under qemu-aarch64 emulation and held to its family's metric.

The artifact runs in the aarch64 onnxruntime wheel on the profile's CPU model (one emulated worker
for all the feeds). The family computes its metric from those *emulated* outputs against the x86
FP32 reference on the validation pictures, exactly as it judges an x86 candidate. Alongside, every
feed also goes through the same artifact on x86: the largest difference says whether the x86
judgement (the one the INT8 search made) carries over to the ARM build. It is not always 0 for
INT8 with unsigned activations: bit-identical for LCNet, PicoDet, TinyPose and PP-OCR cls/rec
(measured), but not for HumanSeg (0.012) nor PP-OCR det (0.51 on the probability map; a plain
MinMax det INT8 scored box F1 0.909 on x86 and 0.833 emulated). Hence the metric is computed
from the emulated outputs, not assumed from x86.

What it does not give: ARM timing. Emulation runs 60-480x slower than this host (FP32; INT8
3-4x faster than FP32 under emulation) and says nothing about a device's speed; the record says so.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..families.base import Evaluation, Family
from ..latency import session
from ..runners.base import InputInfo, Runner
from ..runners.emulated_onnx import EmulatedOnnxRunner

NOT_EXECUTED = "timing on ARM (emulation measures no device speed)"


class _SideBySide(Runner):
    """Returns the emulated outputs; runs the same feeds through the x86 session to record the difference."""

    def __init__(self, emulated: EmulatedOnnxRunner, native):
        self.emulated, self.native = emulated, native
        self.description = emulated.description
        self.max_diff, self.feeds = 0.0, 0

    def get_inputs(self) -> list[InputInfo]:
        return self.emulated.get_inputs()

    def run(self, output_names, feeds):
        got = self.emulated.run(output_names, feeds)
        for a, b in zip(got, self.native.run(output_names, feeds)):
            if a.shape != b.shape:
                self.max_diff = float("inf")      # cannot happen for one graph; never hide it if it does
            elif a.size:
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
                self.max_diff = max(self.max_diff, float(diff))
        self.feeds += 1
        return got

    def close(self) -> None:
        self.emulated.close()


class _Counter(Runner):
    """The x86 session of the artifact, adding up the input elements a family evaluation feeds (native speed)."""

    def __init__(self, native):
        self.native, self.elements = native, 0

    def get_inputs(self) -> list[InputInfo]:
        return [InputInfo(i.name, list(i.shape)) for i in self.native.get_inputs()]

    def run(self, output_names, feeds):
        self.elements += sum(int(np.asarray(value).size) for value in feeds.values())
        return self.native.run(output_names, feeds)


def pictures_within(family: Family, role: str, fp32_paths: dict[str, Path], artifact: Path,
                    val_images: list[Path], max_elements: int) -> list[Path]:
    """The val pictures, in order, whose evaluation inputs add up to at most `max_elements` (a picture
    that would overflow is skipped, so one dense page does not crowd out the others); at least the
    cheapest picture. Elements, not inputs: emulated time grows with them (an OCR rec batch of lines
    1026 px wide costs 3x one of 320 px), so the budget bounds the time for one model."""
    native = session(artifact, 1)
    costs = []
    for picture in val_images:      # the family's own evaluation, run on x86, says what it would feed
        counter = _Counter(native)
        family.evaluate(role, fp32_paths, counter, [picture])
        costs.append(counter.elements)
    chosen, total = [], 0
    for picture, cost in zip(val_images, costs):
        if total + cost <= max_elements:
            chosen.append(picture)
            total += cost
    return chosen or [val_images[costs.index(min(costs))]]


def check_under_emulation(family: Family, role: str, fp32_paths: dict[str, Path], artifact: Path,
                          val_images: list[Path], cpu: str, threads: int = 1,
                          max_elements: int | None = None) -> tuple[Evaluation, dict]:
    """Judge `artifact` (for `role`) executed by aarch64 onnxruntime under `-cpu cpu` on `val_images`.

    `max_elements` bounds the emulated work (one OCR rec batch of 6 lines of 48x320 costs ~23 CPU-s
    emulated in FP32): the emulated evaluation then runs on the pictures pictures_within() picks,
    and the record names those and the ones judged on x86 only. The emulator must be installed (the
    convert command ensures it, or `edge toolchain install arm-emulator`); if not, the runner says so
    in one line."""
    val_images = [Path(p) for p in val_images]
    started = time.monotonic()
    emulated_on = val_images if max_elements is None else pictures_within(family, role, fp32_paths, artifact,
                                                                          val_images, max_elements)
    emulated = EmulatedOnnxRunner(artifact, cpu, threads)
    runner = _SideBySide(emulated, session(artifact, threads))
    try:
        evaluation = family.evaluate(role, fp32_paths, runner, emulated_on)
    finally:
        runner.close()
    record = _record(runner, emulated, evaluation, emulated_on, started)
    if len(emulated_on) < len(val_images):
        skipped = [p.name for p in val_images if p not in emulated_on]
        on_x86 = family.evaluate(role, fp32_paths, artifact, val_images)
        record["details"]["not_emulated"] = (
            f"{', '.join(skipped)}: over the budget of {max_elements} emulated input elements; judged on x86 "
            f"only (all {len(val_images)} pictures on x86: {on_x86.describe()})")
    return evaluation, record


def _record(runner: _SideBySide, emulated: EmulatedOnnxRunner, evaluation: Evaluation, pictures: list[Path],
            started: float) -> dict:
    """In the shape of runtimes.bundle.ArtifactCheck (the manifest's per-artifact check record)."""
    return {
        "executed": runner.description,
        "metric": evaluation.metric,
        "value": round(evaluation.value, 6),
        "budget": evaluation.budget,
        "passed": evaluation.passed,
        "validation_pictures": [p.name for p in pictures],      # the pictures the emulated outputs judged
        "not_executed": NOT_EXECUTED,
        "details": {
            "cpu": emulated.cpu,
            "reference": f"x86 FP32 reference, onnxruntime {ort.__version__} on this host",
            "samples": evaluation.samples,
            **{name: round(value, 6) for name, value in evaluation.extras.items()},
            "feeds": runner.feeds,
            "seconds": round(time.monotonic() - started, 1),
            "worker_startup_seconds": round(emulated.startup_seconds, 1),
            "max_abs_diff_vs_x86_same_artifact": (runner.max_diff if np.isfinite(runner.max_diff)
                                                  else "outputs of different shapes"),
            "identical_to_x86": runner.max_diff == 0.0,
        },
    }


def check_many(jobs: list[dict], workers: int = 2) -> list[tuple[Evaluation, dict]]:
    """check_under_emulation(**job) for every job, `workers` emulated workers at a time (one emulated
    thread each: a second thread inside one worker made it slower, measured; two workers use two cores)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda job: check_under_emulation(**job), jobs))


__all__ = ["check_many", "check_under_emulation", "pictures_within", "NOT_EXECUTED"]
