"""The Paddle Lite backend: x86 `.nb` files made by the toolchain's real `opt` from shared Paddle programs,
run in a worker process under the toolchain's Python, against onnxruntime on the same trained model;
a worker killed mid-run costs one call, and the next call restarts it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from runtimes.bundle import RuntimeOptions
from runtimes.errors import BackendError

from ..paddle_lite_support import (IMAGES, LCNET, SHARED, REPO_ROOT, make_x86_nb, needs_lcnet,  # noqa: F401
                                   paddle_lite_cache, paddle_lite_root)

PICODET = SHARED / "models" / "PP-PicoDet" / "picodet_s_320_coco"
# model folder, program name, picture, input size (h, w): ImageNet-normalised RGB, as both exports expect
MODELS = {"lcnet": (LCNET, "inference", "cls_img_rot0_demo.jpg", (224, 224)),
          "picodet": (PICODET, "model", "coco_bus.jpg", (320, 320))}


def real_batch(picture: str, size: tuple[int, int]) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / picture)), cv2.COLOR_BGR2RGB)
    x = cv2.resize(rgb, size[::-1]).astype(np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def backend_for(nb: Path, threads: int = 1):
    from runtimes.backends.paddle_lite import PaddleLiteBackend   # after EDGE_CACHE_DIR points at the toolchain

    return PaddleLiteBackend(nb, RuntimeOptions(threads=threads))


@pytest.fixture
def lcnet_nb(paddle_lite_cache, tmp_path) -> Path:
    return make_x86_nb(LCNET, tmp_path / "lcnet_x86")


@needs_lcnet
@pytest.mark.parametrize("name", list(MODELS))
def test_x86_nb_equals_onnxruntime_on_a_real_picture(name, paddle_lite_cache, tmp_path):
    folder, program, picture, size = MODELS[name]
    nb = make_x86_nb(folder, tmp_path / f"{name}_x86", program)
    batch = real_batch(picture, size)
    backend = backend_for(nb)
    try:
        outputs = backend.run({backend.input_names[0]: batch})
    finally:
        backend.close()
    quiet = ort.SessionOptions()
    quiet.log_severity_level = 3                               # the trained ONNX warns about initializer inputs
    session = ort.InferenceSession(str(folder / "model.onnx"), quiet, providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: batch})
    assert len(outputs) == len(backend.output_names) == len(reference)
    for got, want in zip(outputs, reference):                 # outputs in the model's order
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4, (name, float(np.abs(got - want).max()))
    if name == "lcnet":
        assert int(np.argmax(outputs[0])) == 0                 # the upright demo page reads as '0'


@needs_lcnet
def test_worker_killed_mid_run_fails_that_call_and_the_next_call_restarts_it(lcnet_nb):
    batch = real_batch("cls_img_rot0_demo.jpg", (224, 224))
    backend = backend_for(lcnet_nb)
    expected = backend.run({"x": batch})[0]
    first_pid = backend.worker.pid
    outcomes: list[object] = []
    two_done = threading.Event()

    def keep_calling() -> None:                # calls back to back, so the kill lands inside one
        for _ in range(40):
            try:
                outcomes.append(backend.run({"x": batch})[0])
            except BackendError as err:
                outcomes.append(err)
            if len(outcomes) == 2:
                two_done.set()

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        assert two_done.wait(60)
        os.kill(first_pid, signal.SIGKILL)
        caller.join(120)
    finally:
        backend.close()
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BackendError)]
    assert len(failed) == 1 and "killed by SIGKILL" in str(outcomes[failed[0]]), [str(outcomes[i]) for i in failed]
    after = outcomes[failed[0] + 1:]
    assert after and all(np.array_equal(o, expected) for o in after)   # the restarted worker answers alike
    assert backend.worker.restarts == 1


def test_without_any_paddle_lite_the_format_is_listed_unavailable(tmp_path):
    probe = ("import json, runtimes.backends as b; "
             "print(json.dumps([sorted(b.BACKENDS), b.UNAVAILABLE.get('paddle_lite', '')]))")
    env = {**os.environ, "EDGE_CACHE_DIR": str(tmp_path)}        # no toolchain there
    env.pop("EDGE_PADDLE_LITE_PYTHON", None)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    loadable, why = json.loads(proc.stdout)
    assert "onnx" in loadable and "paddle_lite" not in loadable
    assert "edge toolchain install paddle-lite" in why


@needs_lcnet
def test_edge_paddle_lite_python_names_the_interpreter(lcnet_nb, paddle_lite_cache, tmp_path, monkeypatch):
    from converters.toolchains.paddle_lite import paddle_lite_python

    python = str(paddle_lite_python())
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path))           # the toolchain is no longer where edge looks
    monkeypatch.setenv("EDGE_PADDLE_LITE_PYTHON", python)
    from runtimes.backends.paddle_lite import find_runtime

    assert find_runtime()[:1] == (python,)
    backend = backend_for(lcnet_nb)
    try:
        assert backend.run({"x": real_batch("cls_img_rot180_demo.jpg", (224, 224))})[0].shape == (1, 4)
    finally:
        backend.close()
