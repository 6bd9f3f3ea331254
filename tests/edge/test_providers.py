"""What really runs each model, as the daemon reports it: a real PP-LCNet bundle whose manifest asks for a
Jetson's providers (TensorRT, CUDA, CPU), run by the daemon on this CPU-only onnxruntime, with a real
mosquitto. It must run on the CPU and say so in its log, in the retained status/info and in metrics.
Nothing here runs TensorRT or CUDA.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import jsonschema
import onnxruntime as ort
import pytest

from edge.daemon import contract
from edge.daemon.worker import model_runs
from runtimes.bundle import Bundle, RuntimeOptions
from runtimes.run_context import RunContext
from runtimes.tasks import load_task

from ..paddle_lite_support import LCNET, make_x86_nb, needs_lcnet, paddle_lite_cache, paddle_lite_root  # noqa: F401
from ..runtimes.test_onnxruntime_backend import IMAGES, JETSON, lcnet_jetson_bundle, needs_cpu_only_ort
from .test_daemon import validator

DEVICE = "jetson-01"
CPU_ONLY = [{"role": "classifier", "artifact": "classifier.fp32.onnx", "precision": "fp32",
             "providers": ["CPUExecutionProvider"]}]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return lcnet_jetson_bundle(tmp_path_factory.mktemp("lcnet-jetson"))


@needs_cpu_only_ort
def test_daemon_reports_the_cpu_fallback_in_its_log_status_and_metrics(
        tmp_path, bundle_dir, mqtt_broker, mqtt_subscriber, edge_daemon):
    assert Bundle.open(bundle_dir).manifest.runtime.providers == JETSON
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    shutil.copy(IMAGES / "cls_img_rot0_demo.jpg", folder / "page.jpg")
    pipeline = Bundle.open(bundle_dir).manifest.pipeline
    sub = mqtt_subscriber(mqtt_broker, [f"edge/{DEVICE}/#"])
    daemon = edge_daemon([str(bundle_dir), "--source", str(folder), "--mqtt", mqtt_broker.url, "--device-id", DEVICE,
                          "--poll-interval", "0.2", "--metrics-interval", "1", "--state-dir", str(state)])

    result = sub.wait_for(contract.results_topic(DEVICE, pipeline), 1, timeout=60)[0].json()
    assert [r["label"] for r in result["results"]] == ["0"]
    daemon.wait_log(r"classifier\.fp32\.onnx: runs on CPUExecutionProvider \(TensorrtExecutionProvider, "
                    rf"CUDAExecutionProvider not available in this onnxruntime {ort.__version__}\)")

    info = mqtt_broker.retained(contract.status_info_topic(DEVICE)).json()
    validator(contract.STATUS_SCHEMA).validate(info)
    assert [p["runs"] for p in info["pipelines"]] == [CPU_ONLY]

    topic = contract.metrics_topic(DEVICE)
    metrics = [m.json() for m in sub.wait_for(topic, len(sub.on(topic)) + 1, timeout=20)]
    for message in metrics:
        validator(contract.METRICS_SCHEMA).validate(message)
    assert metrics[-1]["pipelines"][pipeline]["runs"] == CPU_ONLY

    assert daemon.terminate() == 0, daemon.log
    assert "TensorRT engine" not in daemon.log and "Traceback" not in daemon.log
    assert not (state / "tensorrt").exists()


def test_schemas_refuse_a_model_entry_without_its_providers():
    entry = {"role": "det", "artifact": "det.int8.onnx", "precision": "int8"}
    status = contract.status_description(DEVICE, "0.1.0", "jetson-orin", [{"name": "door", "task": "ocr"}])
    status["pipelines"][0]["runs"] = [entry]
    with pytest.raises(jsonschema.ValidationError, match="providers"):
        validator(contract.STATUS_SCHEMA).validate(status)
    status["pipelines"][0]["runs"] = [{**entry, "providers": ["paddle_lite (aarch64 worker)"]}]
    validator(contract.STATUS_SCHEMA).validate(status)


def test_every_model_of_a_multi_model_task_is_listed_in_manifest_order(ocr_bundle_dir, tmp_path):
    bundle = Bundle.open(ocr_bundle_dir)
    task = load_task(bundle, RunContext(state_dir=tmp_path))
    runs = model_runs(task)
    assert [r["role"] for r in runs] == [m.role for m in bundle.manifest.models]
    for run in runs:
        selected = bundle.manifest.model(run["role"]).selected_artifact()
        assert (run["artifact"], run["precision"]) == (selected.path, selected.precision)
        assert run["providers"] == ["CPUExecutionProvider"]      # an x86 bundle asks for the CPU only


@needs_lcnet
def test_paddle_lite_reports_its_worker_in_the_same_terms(paddle_lite_cache, tmp_path):
    from runtimes.backends.paddle_lite import PaddleLiteBackend   # after EDGE_CACHE_DIR points at the toolchain

    backend = PaddleLiteBackend(make_x86_nb(LCNET, tmp_path / "lcnet_x86"), RuntimeOptions(threads=1))
    try:
        assert backend.providers_in_use == ["paddle_lite (x86_64 worker)"]
    finally:
        backend.close()
