"""Calling converters.paddle_worker in a child process and reading its one-line JSON verdict."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runtimes.errors import ConversionError


def call_paddle_worker(command: str, what: str, timeout: float = 900, module: str = "converters.paddle_worker",
                       **args: str | int) -> dict:
    argv = [sys.executable, "-m", module, command]
    for key, value in args.items():
        argv += [f"--{key}", str(value)]
    env = {**os.environ, "GLOG_minloglevel": "2", "FLAGS_call_stack_level": "0"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{what}: Paddle step timed out after {timeout:.0f} s") from None
    verdict = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                verdict = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    if verdict is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConversionError(f"{what}: Paddle step crashed (exit {proc.returncode}): {tail[:300]}")
    if not verdict.get("ok"):
        raise ConversionError(f"{what}: {verdict.get('error')}")
    return verdict
