"""The paddle-lite toolchain for real: installed from the package registry into a temporary EDGE_CACHE_DIR,
its `opt` converting a shared Paddle program, idempotence, two installs at once, repairs of broken and
half-finished installs, and the Debian bullseye route that machines without CPython 3.8-3.10 take."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort

from converters.toolchains.paddle_lite import PaddleLiteToolchain, find_python
from runtimes.toolpaths import READY_FILE

from ..paddle_lite_support import (INSTALL_RUNS, LCNET, STALE_STAGING, edge_cli, half_finished,  # noqa: F401
                                   make_x86_nb, needs_lcnet, paddle_lite_cache, paddle_lite_root)


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file and link, to show that nothing was rebuilt."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in root.rglob("*") if not p.is_dir() and "__pycache__" not in p.parts}


@needs_lcnet
def test_install_reports_its_tools_and_opt_converts_a_shared_model(paddle_lite_cache, tmp_path):
    status = PaddleLiteToolchain().status()
    assert status.installed, status.detail
    info = status.info
    found = find_python()
    expected = f"found {found[0]}" if found else "Debian bullseye"
    assert info["interpreter"].startswith(expected)
    assert info["paddlelite"] == "2.13rc0" and int(info["numpy"].split(".")[0]) < 2
    assert Path(info["python"]).is_relative_to(paddle_lite_cache) and Path(info["opt"]).is_file()

    nb = make_x86_nb(LCNET, tmp_path / "lcnet_x86")
    assert nb.stat().st_size > 1_000_000           # the weights are in it (6.8 MB measured)


def test_second_install_changes_nothing(paddle_lite_root):
    folder = paddle_lite_root / "toolchains" / "paddle-lite"
    before = tree_state(folder)
    proc = edge_cli(["toolchain", "install", "paddle-lite"], paddle_lite_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("paddle-lite: already installed: paddlelite 2.13rc0")
    assert "installed in" not in proc.stderr
    assert tree_state(folder) == before
    assert not list(folder.parent.glob(".paddle-lite.staging-*"))


def test_two_installs_at_once_repair_a_broken_install_and_build_once(paddle_lite_root):
    """paddle_lite_root was made by two installs started at once over a broken install (READY.json, but
    its venv's Python points at a removed interpreter) and a killed install's staging folder."""
    record = INSTALL_RUNS[paddle_lite_root]
    assert record["before"].startswith("paddle-lite    missing   broken (its Python "), record["before"]
    assert "is missing (was its base interpreter removed?)" in record["before"]
    runs = record["runs"]
    assert [code for code, _, _ in runs] == [0, 0], runs
    builds = [err for _, _, err in runs if "paddle-lite: installed in" in err]
    assert len(builds) == 1, runs                              # the other waited for the lock, found it made
    assert all(out.startswith("paddle-lite: installed: paddlelite 2.13rc0") for _, out, _ in runs)
    folder = paddle_lite_root / "toolchains" / "paddle-lite"
    assert not folder.with_name(STALE_STAGING).exists() and not (folder / "venv" / "leftover").exists()


def test_a_venv_that_lost_paddlelite_is_reported_broken(paddle_lite_root, tmp_path):
    folder = tmp_path / "toolchains" / "paddle-lite"
    shutil.copytree(paddle_lite_root / "toolchains" / "paddle-lite", folder, symlinks=True)
    site = next((folder / "venv" / "lib").glob("python3.*/site-packages"))
    for entry in site.glob("paddlelite*"):
        shutil.rmtree(entry)
    proc = edge_cli(["toolchain", "status"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("paddle-lite    missing   broken (its Python cannot import paddlelite: "
                                  "ModuleNotFoundError: No module named 'paddlelite')"), proc.stdout


@needs_lcnet
def test_debian_bullseye_route_for_real(tmp_path, monkeypatch):
    """The route of a machine without CPython 3.8-3.10: Debian's python3.9 unpacked without root."""
    cache = tmp_path / "cache"
    folder = half_finished(cache, ready=False)                 # a killed install: no READY.json
    assert "half-finished (will be rebuilt)" in edge_cli(["toolchain", "status"], cache).stdout
    proc = edge_cli(["toolchain", "install", "paddle-lite"], cache, EDGE_PADDLE_LITE_ROUTE="debian")
    assert proc.returncode == 0, proc.stderr
    assert "unpacking Debian bullseye's python3.9" in proc.stderr
    assert not folder.with_name(STALE_STAGING).exists() and not (folder / "venv" / "leftover").exists()
    info = json.loads((folder / READY_FILE).read_text())
    assert info["interpreter"].startswith("Debian bullseye python3.9-minimal 3.9.")
    assert info["python_version"].startswith("3.9.") and info["paddlelite"] == "2.13rc0"
    # built in a staging folder, valid where it was renamed to
    assert not os.readlink(folder / "venv" / "bin" / "python3.9").startswith("/")
    assert f"home = {folder}/python/usr/bin" in (folder / "venv" / "pyvenv.cfg").read_text()
    assert not (folder / "apt").exists()                       # apt's private state is not kept

    monkeypatch.setenv("EDGE_CACHE_DIR", str(cache))
    monkeypatch.delenv("EDGE_PADDLE_LITE_PYTHON", raising=False)
    nb = make_x86_nb(LCNET, tmp_path / "lcnet_x86")
    from runtimes.backends.paddle_lite import PaddleLiteBackend, find_runtime
    from runtimes.bundle import RuntimeOptions

    assert find_runtime()[0] == info["python"]
    batch = np.random.default_rng(0).uniform(-2, 2, (1, 3, 224, 224)).astype(np.float32)
    backend = PaddleLiteBackend(nb, RuntimeOptions(threads=1))
    try:
        probs = backend.run({"x": batch})[0]
    finally:
        backend.close()
    session = ort.InferenceSession(str(LCNET / "model.onnx"), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"x": batch})[0]
    assert np.abs(probs - reference).max() < 1e-4
