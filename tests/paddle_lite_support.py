"""Shared by the Paddle Lite tests: the real toolchain installed once per session, and x86 `.nb` files
made with its real `opt`.

The toolchain goes into one folder under the session's temporary root, so every test module that
asks for it gets the same install (the install is idempotent: a second ask costs a status check).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
LCNET = SHARED / "models" / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
IMAGES = SHARED / "images"
needs_lcnet = pytest.mark.skipif(not LCNET.is_dir(), reason=f"needs the shared models folder {SHARED}")


def edge_cli(args: list[str], cache: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """The real `edge ...` in a child process with EDGE_CACHE_DIR=cache (plus `env`)."""
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "EDGE_CACHE_DIR": str(cache), **env})


STALE_STAGING = ".paddle-lite.staging-999999"
INSTALL_RUNS: dict[Path, dict] = {}    # cache -> {"before": status line, "runs": [(code, stdout, stderr)]}


def half_finished(cache: Path, ready: bool) -> Path:
    """What a killed or decayed install leaves: a venv folder (with READY.json when `ready`) whose Python
    points at a removed interpreter (`pyenv uninstall 3.10`), and a killed install's staging folder."""
    folder = cache / "toolchains" / "paddle-lite"
    (folder / "venv" / "bin").mkdir(parents=True)
    (folder / "venv" / "bin" / "python").symlink_to("/nonexistent/pyenv/versions/3.10.0/bin/python3.10")
    (folder / "venv" / "leftover").write_text("x")
    if ready:
        (folder / "READY.json").write_text('{"summary": "paddlelite 2.13rc0"}')
    (folder.with_name(STALE_STAGING)).mkdir()
    (folder.with_name(STALE_STAGING) / "half.whl").write_bytes(b"\0" * 1000)
    return folder


@pytest.fixture(scope="session")
def paddle_lite_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An EDGE_CACHE_DIR holding a working paddle-lite toolchain (found-interpreter route when the machine
    has CPython 3.8-3.10, else the Debian route), installed by the real CLI.

    One install serves every Paddle Lite test, so it is made the hard way once: over a broken install
    and a killed one's staging folder, by two `edge toolchain install` processes started at once
    (INSTALL_RUNS keeps what they printed, for the test that judges it)."""
    cache = tmp_path_factory.getbasetemp() / "edge-cache-paddle-lite"
    if cache not in INSTALL_RUNS:
        half_finished(cache, ready=True)
        before = edge_cli(["toolchain", "status"], cache).stdout.splitlines()[0]
        argv = [sys.executable, "-m", "edge", "toolchain", "install", "paddle-lite"]
        env = {**os.environ, "EDGE_CACHE_DIR": str(cache)}
        procs = [subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=900) for p in procs]
        INSTALL_RUNS[cache] = {"before": before,
                               "runs": [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]}
    failed = [err for code, _, err in INSTALL_RUNS[cache]["runs"] if code != 0]
    if failed:
        pytest.fail(f"edge toolchain install paddle-lite failed: {failed[0][-2000:]}", pytrace=False)
    return cache


@pytest.fixture
def paddle_lite_cache(paddle_lite_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """EDGE_CACHE_DIR set to the installed toolchain for this test (and the processes it starts)."""
    monkeypatch.setenv("EDGE_CACHE_DIR", str(paddle_lite_root))
    monkeypatch.delenv("EDGE_PADDLE_LITE_PYTHON", raising=False)
    return paddle_lite_root


def make_x86_nb(model_dir: Path, out: Path, model: str = "inference") -> Path:
    """`opt --valid_targets x86` on a legacy Paddle program (EDGE_CACHE_DIR must hold the toolchain);
    returns the `.nb` file."""
    from converters.toolchains.paddle_lite import opt_command, paddle_lite_env

    out.parent.mkdir(parents=True, exist_ok=True)
    argv = opt_command() + ["--model_file", str(model_dir / f"{model}.pdmodel"),
                            "--param_file", str(model_dir / f"{model}.pdiparams"),
                            "--valid_targets", "x86", "--optimize_out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=paddle_lite_env())
    nb = out.with_name(out.name + ".nb")
    if proc.returncode != 0 or not nb.is_file():
        pytest.fail(f"opt failed ({proc.returncode}): {(proc.stderr + proc.stdout)[-2000:]}", pytrace=False)
    return nb
