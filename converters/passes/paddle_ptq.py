"""Paddle post-training INT8 of a legacy program, for Paddle Lite's ARM kernels, that must earn its place.

Paddle's own PTQ (converters/paddle_ptq_worker.py, a child process) quantizes the legacy program:
symmetric int8 activations per tensor, int8 weights per output channel, quantize_linear /
dequantize_linear ops that Paddle Lite's opt turns into ARM int8 kernels. Calibrated on the family's
calibration inputs; every candidate judged with the family metric against the FP32 ONNX reference on
the held-out validation pictures, the quantized program run by Paddle Inference (it simulates the
rounding in float: converters/runners/paddle_inference.py). The same care as the ONNX path
(passes/quantize.py), in this order:
1. Range algorithms (RANGE_ALGOS), in order, until one meets the budget. Plain (every conv quantized),
   against FP32 on held-out pictures: PicoDet-S-320 COCO box F1 0.00 with each of avg, hist, abs_max, mse
   and KL; PP-OCRv4 det needs hist (avg: F1 0.90), rec too (avg: CER 2.4%, hist 1.5%); LCNet, the ppocr
   cls, TinyPose and the layout PicoDet pass with avg. Left out: KL (135 s on PicoDet, the others
   13-28 s) and mse (PicoDet 0.00; LCNet's outputs at 29 dB SQNR against FP32, the others 46-55 dB).
2. Sensitive layers kept in float: the quantized ops of the best plain candidate are ranked by their
   own damage (the op fed the FP32 input rounded with its calibrated range and its int8 weights: SQNR
   against FP32), and the worst 1, 2, 4, ... are kept in float (Paddle's skip_tensor_list) until a
   candidate meets the budget. A ranking by SQNR drop along the quantized program instead (as the ONNX
   path does) blames whichever op comes first after the float ones (everything downstream of the first
   ruined depthwise conv is ruined too): on PicoDet it needed 16 layers for F1 0.97, the local ranking
   4, all depthwise convolutions (three fed by a Concat, one by the max-pool after the stem), whose
   input channels span ranges too wide for one 8-bit range: the problem passes/channel_groups.py
   solves for ONNX, met here by keeping those convolutions in float.
3. Channel groups are not carried over: that rewrite is an ONNX graph rewrite (convs split, pieces
   carried through hard-swish, depthwise convs and Concat) with no counterpart for Paddle programs
   here; keeping the few worst depthwise convs in float is what this pass does instead.
The first candidate that meets the budget wins (fewest float layers); none: the input comes back with
notes["paddle_ptq"]["accepted"] False and the best candidate's measured reason. The search stops
after STALE_STEPS steps in which neither the metric nor the outputs' SQNR against FP32 improved, and
does not start a step after TIME_BUDGET_S.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.errors import BackendError, ConversionError
from runtimes.workers.client import WorkerProcess

from ..families.base import Evaluation
from ..runners.paddle_inference import PaddleInferenceRunner, host_threads, worker_env
from .base import ModelFile, Pass, PassContext

RANGE_ALGOS = ("avg", "hist", "abs_max")   # Paddle PTQ `algo`: mean of per-batch maxima, 99.999th percentile, max
CALIBRATION_LIMIT = 16
PROBE_FEEDS = 2                # calibration inputs the sensitivity ranking runs on
SEARCH_STEPS = (1, 2, 4, 8, 16, 32)
STALE_STEPS = 2
TIME_BUDGET_S = 360.0          # no new step after this; PicoDet-S-320 needed ~2.5 min on 2 busy cores
WORKER = "converters.paddle_ptq_worker"
JOB_TIMEOUT_S = 900.0          # one PTQ job or one judged input


@dataclass
class Candidate:
    path: Path
    algo: str
    fp32_layers: list[str]          # weight names of the ops kept in float
    evaluation: Evaluation
    output_sqnr: float | None       # model outputs vs FP32 on the probe inputs, dB
    seconds: float

    @property
    def rank(self) -> tuple:
        """Within budget first, then the metric, then the outputs' SQNR (a metric at 0 says little)."""
        return (*self.evaluation.rank, self.output_sqnr if self.output_sqnr is not None else -1e9)

    def row(self) -> dict[str, Any]:
        return {"algo": self.algo, "fp32_layers": len(self.fp32_layers), "value": round(self.evaluation.value, 5),
                "passed": self.evaluation.passed, "output_sqnr_db": self.output_sqnr, "seconds": self.seconds}


def save_feeds(feeds: list[dict[str, np.ndarray]], path: Path) -> Path:
    """Feeds as the worker reads them: 'f<index>__<input name>'."""
    np.savez(path, **{f"f{i:04d}__{name}": value for i, feed in enumerate(feeds) for name, value in feed.items()})
    return path


class PaddlePtqPass(Pass):
    name = "paddle_ptq"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        return _Search().run(model, ctx)


class _Search:
    """One pass run: its context, its calibration inputs and every candidate tried."""

    runner_description, paddle_version = "", ""

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        self.session = None
        try:
            return self._run(model, ctx)
        finally:
            if self.session is not None:
                self.session.close()

    def _run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        started = time.monotonic()
        self._setup(model, ctx)
        feeds = self.family.calibration_feeds(ctx.role, self.fp32, self.calib,
                                              int(ctx.options.get("calib_limit", CALIBRATION_LIMIT)))
        if not feeds:
            raise ConversionError(f"paddle_ptq {ctx.role}: no calibration inputs were made from the pictures")
        self.feeds = save_feeds(feeds, self.work / "calibration.npz")
        ctx.progress(f"paddle_ptq {ctx.role}: calibrating on {len(feeds)} inputs from {len(self.calib)} pictures")
        best, ranking = self._plain()
        if not best.evaluation.passed:
            best = self._keep_in_float(best, ranking, started)
        notes = self._notes(best, len(feeds), len(ranking), started)
        if not best.evaluation.passed:
            return ModelFile(model.path, model.format, model.precision, {**model.notes, "paddle_ptq": notes})
        ctx.progress(f"paddle_ptq {ctx.role}: accepted: {notes['reason']}")
        return ModelFile(best.path, "paddle-legacy", "int8", {**model.notes, "paddle_ptq": notes})

    def _setup(self, model: ModelFile, ctx: PassContext) -> None:
        self.ctx, self.family = ctx, ctx.options.get("family")
        self.fp32: dict[str, Path] = ctx.options.get("fp32_models") or {}
        # path order, as `edge convert` lists them: the calibration inputs depend on it (see passes/quantize.py)
        self.calib = sorted(Path(p) for p in ctx.options.get("calib_images") or [])
        self.val = list(ctx.options.get("val_images") or [])
        if model.format != "paddle-legacy":
            raise ConversionError(f"{ctx.role} model: Paddle PTQ quantizes legacy Paddle programs, not {model.format}")
        if self.family is None or ctx.role not in self.fp32 or not self.calib or not self.val:
            raise ConversionError(f"paddle_ptq {ctx.role}: needs a task family, the FP32 models and calibration "
                                  "and validation images (give --calib)")
        self.work = ctx.workdir / f"{ctx.role}.paddle_ptq"
        self.work.mkdir(parents=True, exist_ok=True)
        self.model, self.params = model.path, model.path.with_suffix(".pdiparams")
        self.threads = host_threads(int(ctx.options.get("threads") or 0))
        self.tried: list[Candidate] = []

    def _notes(self, best: Candidate, inputs: int, ranked: int, started: float) -> dict[str, Any]:
        ev = best.evaluation
        layers = f", {len(best.fp32_layers)} layers kept in float" if best.fp32_layers else ""
        reason = f"{best.algo} ranges{layers}: {ev.describe()}"
        if not ev.passed:
            reason = f"no INT8 candidate met the budget (best: {reason})"
        return {"accepted": ev.passed, "reason": reason, "calibration_method": best.algo,
                "fp32_layers": list(best.fp32_layers), "metric": ev.metric, "value": round(ev.value, 6),
                "budget": ev.budget, "samples": ev.samples, "output_sqnr_db": best.output_sqnr,
                "calibration": {"inputs": inputs, "pictures": len(self.calib), "validation_pictures": len(self.val)},
                "sensitivity_ranked": ranked, "candidates": [c.row() for c in self.tried],
                "runner": self.runner_description, "paddle": self.paddle_version,
                "seconds": round(time.monotonic() - started, 1)}

    def _session(self) -> WorkerProcess:
        """One worker for the whole search: PTQ jobs and judging (converters/paddle_ptq_worker.py serve)."""
        if self.session is None:
            root = str(Path(__file__).resolve().parents[2])
            env = {**worker_env(self.threads), "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
            self.session = WorkerProcess([sys.executable, "-m", WORKER, "serve"], {}, f"paddle_ptq {self.ctx.role}",
                                         env, call_timeout=JOB_TIMEOUT_S)
        return self.session

    def _quantize(self, jobs: list[dict]) -> list[dict]:
        spec = {"model": str(self.model), "params": str(self.params), "feeds": str(self.feeds), "jobs": jobs}
        path = self.work / f"jobs{len(self.tried)}.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        try:
            reply = self._session().command("quantize", jobs=str(path))
        except BackendError as err:
            raise ConversionError(str(err)) from None
        self.paddle_version = reply["paddle"]
        return reply["jobs"]

    def _judge(self, job: dict, algo: str, skip: list[str]) -> Candidate:
        out = Path(job["out"])
        try:
            runner = PaddleInferenceRunner(out / "model.pdmodel", out / "model.pdiparams", self.threads,
                                           session=self._session())
        except BackendError as err:
            raise ConversionError(str(err)) from None
        with runner:
            if not runner.quant_ops:
                raise ConversionError(f"paddle_ptq {self.ctx.role}: the quantized program has no quantize ops")
            evaluation = self.family.evaluate(self.ctx.role, self.fp32, runner, self.val)
            self.runner_description = runner.description
        found = Candidate(out / "model.pdmodel", algo, list(skip), evaluation, job.get("output_sqnr"), job["seconds"])
        self.tried.append(found)
        self.ctx.progress(f"paddle_ptq {self.ctx.role}: {algo} ranges, {len(skip)} layers in float: "
                          f"{evaluation.describe()}")
        return found

    def _plain(self) -> tuple[Candidate, list[str]]:
        """Every quantizable op quantized, one range algorithm after the other until one meets the budget;
        if none does, the best one's ops ranked by sensitivity (ranking only that one: it is most of a
        PTQ job's time on deep models)."""
        found = []
        for algo in RANGE_ALGOS:
            job = self._quantize([{"algo": algo, "out": str(self.work / f"{algo}.f0"), "probe": PROBE_FEEDS}])[0]
            found.append(self._judge(job, algo, []))
            if found[-1].evaluation.passed:
                return found[-1], []
        best = max(found, key=lambda c: c.rank)
        ranked = self._quantize([{"algo": best.algo, "out": str(best.path.parent), "probe": PROBE_FEEDS,
                                  "rank": True, "existing": True}])[0]
        return best, [r["weight"] for r in ranked["ranked"]]

    def _keep_in_float(self, best: Candidate, ranking: list[str], started: float) -> Candidate:
        """The worst 1, 2, 4, ... ops of the ranking kept in float, until a candidate meets the budget."""
        counts = [c for c in SEARCH_STEPS if c < len(ranking)] + ([len(ranking)] if ranking else [])
        stale, algo = 0, best.algo
        top_sqnr = best.output_sqnr if best.output_sqnr is not None else -1e9
        for count in dict.fromkeys(counts):
            if stale >= STALE_STEPS or time.monotonic() - started > TIME_BUDGET_S:
                break
            skip = ranking[:count]
            job = self._quantize([{"algo": algo, "skip": skip, "out": str(self.work / f"{algo}.f{count}"),
                                   "probe": PROBE_FEEDS}])[0]
            found = self._judge(job, algo, skip)
            if found.evaluation.passed:
                return found
            # progress is a better metric or better outputs: HumanSeg's mask IoU (4 pictures) wobbled at
            # 1, 2, 4 float layers while its output SQNR rose, and it passed at 32
            sqnr = found.output_sqnr if found.output_sqnr is not None else -1e9
            stale = 0 if found.rank > best.rank or sqnr > top_sqnr else stale + 1
            best, top_sqnr = max((best, found), key=lambda c: c.rank), max(top_sqnr, sqnr)
        return best
