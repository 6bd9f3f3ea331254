"""`edge bench`: run every artifact of a bundle that loads here, in the real pipeline on the bundle's sample
pictures, and choose per model the fastest one that stays within the family budget against FP32.

What is run (one fresh process each, edge/device/measure.py):
  1. the reference: every model on its FP32 artifact (the FP32 ONNX, the converter's own reference);
  2. per model, each other artifact that loads here, the other models staying on their FP32 reference, so the
     differences in latency and results are that artifact's alone;
  3. when several models chose a non-reference artifact, all the choices together, judged again per model
     (errors of two stages can add up); if that misses a budget, every model keeps its reference.
Latency is the pipeline's whole call per frame (pre-processing, every model, post-processing; decoding the
picture excluded), over `frames` frames cycling through the pictures after a warm-up (every picture once, at
least 3 calls). Runs 1 and 2 are made in two rounds, the order reversed in the second, half the frames each.
"""
from __future__ import annotations

import platform
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from runtimes.bundle import Bundle
from runtimes.errors import BackendError, BundleError
from runtimes.image import IMAGE_SUFFIXES

from .agreement import judge
from .choose import choose, default_artifact, loadable, reference_artifact
from .measure import RunReply, RunRequest
from .record import BenchRecord, CombinedCheck, Measurement, RoleChoice, manifest_digest

Progress = Callable[[str], None]
RUN_TIMEOUT_S = 3600
ROUNDS = 2


@dataclass
class BenchOptions:
    frames: int = 20
    threads: int | None = None               # None: the bundle's runtime threads
    state_dir: Path | None = None            # caches (e.g. TensorRT engines) as the daemon keeps them
    pictures: Path | None = None             # a folder to use instead of the bundle's samples


def sample_pictures(bundle: Bundle, folder: Path | None) -> list[Path]:
    if folder is not None:
        pictures = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not pictures:
            raise BundleError(f"--images {folder}: no pictures in it ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return pictures
    if not bundle.manifest.samples:
        raise BundleError(f"{bundle.root}: the bundle carries no sample pictures (made before edge shipped them); "
                          "reconvert it, or give pictures like the ones the device will see with --images DIR")
    return [bundle.path_of(s.path) for s in bundle.manifest.samples]


def _run(bundle: Bundle, prefer: dict[str, str], pictures: list[Path], options: BenchOptions,
         progress: Progress, frames: int) -> RunReply:
    """One configuration in a child process; its progress lines and warnings are passed on."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        reply_path = Path(tmp) / "reply.json"
        request = RunRequest(bundle=str(bundle.root), prefer=prefer, pictures=[str(p) for p in pictures],
                             frames=frames, threads=options.threads, reply=str(reply_path),
                             state_dir=str(options.state_dir) if options.state_dir else None)
        proc = subprocess.Popen([sys.executable, "-m", "edge.device.measure"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        proc.stdin.write(request.model_dump_json())
        proc.stdin.close()
        watchdog = threading.Timer(RUN_TIMEOUT_S, proc.kill)     # a hung run must not hang the bench
        watchdog.start()
        try:
            for line in proc.stderr:
                if line.strip():
                    progress("    " + line.rstrip())
            code = proc.wait()
        finally:
            watchdog.cancel()
        if code == -signal.SIGKILL and not reply_path.is_file():
            return RunReply(error=f"killed: no answer within {RUN_TIMEOUT_S} s, or out of memory")
        if not reply_path.is_file():
            return RunReply(error=f"the bench process ended without an answer (exit status {code})")
        return RunReply.model_validate_json(reply_path.read_text(encoding="utf-8"))


def _timing(reply: RunReply) -> dict[str, float | None]:
    lat = np.asarray(reply.latencies_ms)
    return {"p50_ms": round(float(np.percentile(lat, 50)), 3), "p95_ms": round(float(np.percentile(lat, 95)), 3),
            "fps": round(1000.0 * len(lat) / float(lat.sum()), 2) if lat.sum() > 0 else None,
            "peak_rss_mb": reply.peak_rss_mb}


def _measurement(bundle: Bundle, role: str, artifact: str, prefer: dict[str, str], reply: RunReply,
                 reference: RunReply | None) -> Measurement:
    """The numbers of one run for `role`'s `artifact`; judged against `reference` (None: it is the reference)."""
    art = next(a for a in bundle.manifest.model(role).artifacts if a.path == artifact)
    m = Measurement(role=role, artifact=artifact, format=art.format, precision=art.precision,
                    reference=reference is None, runs_with=reply.opened or dict(prefer), error=reply.error)
    if reply.error is None and reply.opened.get(role) != artifact:
        m.error = f"asked for {artifact}, the pipeline opened {reply.opened.get(role)}"
    if m.error is not None:
        return m
    m = m.model_copy(update={**_timing(reply), "load_s": reply.load_s})
    if reference is None:
        m.passed, m.verdict = True, "the FP32 reference the others are compared with"
        return m
    verdict = judge(bundle.manifest, role, reply.results, reference.results)
    m.metric, m.value, m.budget = verdict.metric, round(verdict.value, 5), verdict.budget
    m.lower_is_better, m.samples, m.passed, m.verdict = (verdict.lower_is_better, verdict.samples, verdict.passed,
                                                         verdict.describe())
    return m


def _say(progress: Progress, m: Measurement) -> None:
    if m.error:
        progress(f"  {m.role}: {m.label}: {m.error}")
    else:
        progress(f"  {m.role}: {m.label}: p50 {m.p50_ms:.1f} ms, p95 {m.p95_ms:.1f} ms, {m.fps} frames/s, "
                 f"peak RSS {m.peak_rss_mb} MB; {m.verdict}")


def _combined(bundle: Bundle, choices: list[RoleChoice], reference: RunReply, pictures: list[Path],
              options: BenchOptions, progress: Progress) -> tuple[CombinedCheck | None, str]:
    """All the choices together, when more than one model left its reference; a miss keeps every reference."""
    changed = [c for c in choices if not c.measured(c.chosen).reference]
    if len(changed) < 2:
        return None, ""
    prefer = {c.role: c.chosen for c in choices}
    progress(f"all choices together: {', '.join(prefer.values())}")
    reply = _run(bundle, prefer, pictures, options, progress, options.frames)
    if reply.error is not None:
        check = CombinedCheck(runs_with=prefer, error=reply.error, verdict=f"did not run: {reply.error}")
    else:
        verdicts = [judge(bundle.manifest, c.role, reply.results, reference.results) for c in changed]
        check = CombinedCheck(runs_with=reply.opened, passed=all(v.passed for v in verdicts),
                              verdict="; ".join(f"{c.role}: {v.describe()}" for c, v in zip(changed, verdicts)),
                              **_timing(reply))
    progress(f"  together: {'' if check.p50_ms is None else f'p50 {check.p50_ms:.1f} ms; '}{check.verdict}")
    if check.passed:
        return check, ""
    for choice in choices:
        ref = next(m for m in choice.measurements if m.reference)
        choice.chosen = ref.artifact
        choice.reason = (f"{ref.label}: the fastest choices missed a budget together ({check.verdict}), so every "
                         "model keeps its FP32 reference")
    return check, "the choices missed a budget together; every model keeps its FP32 reference"


def _host() -> dict[str, str]:
    host = {"machine": platform.machine(), "processor": platform.processor() or "unknown",
            "python": platform.python_version()}
    for package in ("onnxruntime",):
        try:
            host[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return host


def _references(bundle: Bundle, roles: list[str]) -> dict[str, str]:
    references = {}
    for role in roles:
        ref = reference_artifact(bundle, role)
        if ref is None:
            raise BundleError(f"model '{role}' has no FP32 artifact that loads here: nothing to judge the others "
                              "against")
        references[role] = ref.path
    return references


def merge(rounds: list[RunReply]) -> RunReply:
    """One configuration's rounds as one run: every frame's latency, the highest peak, the first round's results."""
    failed = next((r for r in rounds if r.error), None)
    if failed is not None:
        return failed
    return RunReply(opened=rounds[0].opened, results=rounds[0].results,
                    latencies_ms=[v for r in rounds for v in r.latencies_ms], load_s=rounds[0].load_s,
                    peak_rss_mb=max(r.peak_rss_mb or 0.0 for r in rounds))


def _timed(bundle: Bundle, configs: list[tuple[str, dict[str, str]]], pictures: list[Path], options: BenchOptions,
           progress: Progress) -> list[RunReply]:
    """Every configuration in ROUNDS rounds, the order reversed each round (A B C, C B A) with the frames split
    between them, so a machine that gets busier or quieter during the bench favours none."""
    rounds = min(ROUNDS, options.frames)
    shares = [options.frames // rounds + (i < options.frames % rounds) for i in range(rounds)]
    replies: list[list[RunReply]] = [[] for _ in configs]
    for number, frames in enumerate(shares):
        order = list(range(len(configs)))[::1 if number % 2 == 0 else -1]
        for step, index in enumerate(order, 1):
            what, prefer = configs[index]
            progress(f"round {number + 1}/{rounds}, run {step}/{len(configs)}: {what}")
            replies[index].append(_run(bundle, prefer, pictures, options, progress, frames))
            if index == 0 and replies[0][-1].error:
                raise BackendError(f"the FP32 reference did not run: {replies[0][-1].error}")
    return [merge(r) for r in replies]


def bench(bundle: Bundle, options: BenchOptions, progress: Progress) -> BenchRecord:
    pictures = sample_pictures(bundle, options.pictures)
    roles = [m.role for m in bundle.manifest.models]
    references = _references(bundle, roles)
    plan = [(role, a.path) for role in roles for a in loadable(bundle, role)[0] if a.path != references[role]]
    configs = [(f"the FP32 reference ({', '.join(references.values())})", dict(references))]
    configs += [(f"{role} on {artifact}", {**references, role: artifact}) for role, artifact in plan]
    progress(f"{bundle.manifest.pipeline} ({bundle.manifest.task}): {len(configs)} configuration(s), {options.frames} "
             f"frames each, on {len(pictures)} picture(s): {', '.join(p.name for p in pictures)}")
    replies = _timed(bundle, configs, pictures, options, progress)
    reference, choices = replies[0], []
    for role in roles:
        measured = [_measurement(bundle, role, references[role], references, reference, None)]
        measured += [_measurement(bundle, role, artifact, configs[i + 1][1], replies[i + 1], reference)
                     for i, (r, artifact) in enumerate(plan) if r == role]
        for path, why in loadable(bundle, role)[1].items():
            art = next(a for a in bundle.manifest.model(role).artifacts if a.path == path)
            measured.append(Measurement(role=role, artifact=path, format=art.format, precision=art.precision,
                                        error=f"not loadable here: {why}"))
        for m in measured:
            _say(progress, m)
        default = default_artifact(bundle, role)
        chosen, reason = choose(measured, default)
        choices.append(RoleChoice(role=role, chosen=chosen, default=default, reason=reason, measurements=measured))
    combined, note = _combined(bundle, choices, reference, pictures, options, progress)
    return BenchRecord(created=datetime.now(timezone.utc).isoformat(timespec="seconds"), bundle=str(bundle.root),
                       pipeline=bundle.manifest.pipeline, task=bundle.manifest.task,
                       manifest_sha256=manifest_digest(bundle), host=_host(), frames=options.frames,
                       threads=options.threads if options.threads is not None else bundle.manifest.runtime.threads,
                       samples=[p.name for p in pictures], roles=choices, combined=combined, note=note)
