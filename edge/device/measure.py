"""One bench run in a process of its own: `python -m edge.device.measure` reads a RunRequest (JSON) on stdin,
runs the bundle's pipeline with the requested artifacts on the pictures and writes a RunReply to `reply`.

A fresh process per run, so its peak RSS (ru_maxrss) is that pipeline's alone, and one artifact's crash or
leak cannot colour the next one's numbers. Model workers (Paddle Lite runs in one) are closed before the end,
so the largest of them is in RUSAGE_CHILDREN; the peak reported adds it to the process's own.
"""
from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from runtimes.bundle import Bundle
from runtimes.errors import EdgeError
from runtimes.image import read_image
from runtimes.run_context import RunContext
from runtimes.tasks import Task, load_task

PROGRESS_STEPS = 2              # progress lines per run while frames are timed
WARM_UP_CALLS = 3               # at least, before timing: the first calls of a session are slower


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bundle: str
    prefer: dict[str, str]
    pictures: list[str]
    frames: int = Field(gt=0)
    threads: int | None = None                # None: the bundle's
    state_dir: str | None = None
    reply: str


class RunReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str | None = None
    opened: dict[str, str] = Field(default_factory=dict)      # role -> artifact really opened
    results: list[list[dict[str, Any]]] = Field(default_factory=list)   # per picture
    latencies_ms: list[float] = Field(default_factory=list)
    load_s: float | None = None
    peak_rss_mb: float | None = None


def _peak_mb() -> float:
    """ru_maxrss of this process plus the largest finished child (kB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + workers) / 1024.0, 1)


def _close(task: Task) -> None:
    for runner in task.runners().values():
        close = getattr(runner.backend, "close", None)
        if callable(close):
            close()


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else str(value)


def run(request: RunRequest) -> RunReply:
    bundle = Bundle.open(request.bundle, verify=False)          # the parent verified it
    if request.threads is not None:
        bundle.manifest.runtime.threads = request.threads
    images = [read_image(p) for p in request.pictures]          # decoding is not part of a frame's time
    started = time.perf_counter()
    task = load_task(bundle, RunContext(state_dir=Path(request.state_dir) if request.state_dir else None,
                                        prefer=request.prefer, prefer_reason="edge bench run"))
    load_s = time.perf_counter() - started
    opened = {role: runner.artifact.path for role, runner in task.runners().items()}
    try:
        results = [task(image).results for image in images]      # the first calls also warm every model up
        results = json.loads(json.dumps(results, default=_plain))
        for index in range(len(images), WARM_UP_CALLS):
            task(images[index % len(images)])
        latencies, step = [], max(1, request.frames // PROGRESS_STEPS)
        for index in range(request.frames):
            image = images[index % len(images)]
            began = time.perf_counter()
            task(image)
            latencies.append((time.perf_counter() - began) * 1000.0)
            if (index + 1) % step == 0 or index + 1 == request.frames:
                print(f"frame {index + 1}/{request.frames}: p50 so far {float(np.median(latencies)):.1f} ms",
                      file=sys.stderr, flush=True)
    finally:
        _close(task)
    return RunReply(opened=opened, results=results, latencies_ms=[round(v, 3) for v in latencies],
                    load_s=round(load_s, 3), peak_rss_mb=_peak_mb())


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    request = RunRequest.model_validate_json(sys.stdin.read())
    try:
        reply = run(request)
    except EdgeError as err:
        reply = RunReply(error=str(err))
    except Exception as err:          # one artifact's failure is a row of the report, not the end of the bench
        reply = RunReply(error=f"{type(err).__name__}: {err}")
    Path(request.reply).write_text(reply.model_dump_json(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
