"""The onnxruntime backend with a Jetson bundle's providers (TensorRT, CUDA, CPU) on this CPU-only onnxruntime.

Nothing here runs TensorRT or CUDA: this onnxruntime has neither. What is tested is that a TensorRT-first
bundle falls back to the CPU and says so, that the TensorRT options a Jetson would get are prepared right
(precision flags per artifact, caches under the state folder, one engine folder per model), and the pure
decision of when the log may say "building a TensorRT engine", fed with provider lists.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest

import device_profiles
from runtimes.backends.onnxruntime import (CPU, TENSORRT, OnnxRuntimeBackend, builds_tensorrt_engine,
                                           engine_build_message, engine_folder_name, has_cached_engine,
                                           providers_report, tensorrt_cache_options, tensorrt_precision_options)
from runtimes.bundle import Bundle, RuntimeOptions, write_manifest
from runtimes.image import read_image
from runtimes.run_context import RunContext
from runtimes.tasks import load_task

from .test_detection import IMAGES, SHARED, convert

LCNET = SHARED / "models" / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
DEMOS = ["cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg"]
CUDA = "CUDAExecutionProvider"
JETSON = [TENSORRT, CUDA, CPU]
needs_cpu_only_ort = pytest.mark.skipif(
    TENSORRT in ort.get_available_providers() or CUDA in ort.get_available_providers(),
    reason="this onnxruntime has TensorRT or CUDA: the CPU fallback cannot be shown here")


def jetson_runtime(profile: str = "jetson-orin") -> RuntimeOptions:
    """The runtime `edge convert --profile <profile>` writes into a bundle's manifest."""
    settings = device_profiles.load(profile).runtime
    return RuntimeOptions(threads=1, providers=settings.providers, provider_options=settings.provider_options)


def with_jetson_runtime(bundle_dir: Path, profile: str = "jetson-orin") -> Path:
    """Give a real FP32 bundle the runtime a Jetson bundle carries (the artifacts and their hashes stay)."""
    bundle = Bundle.open(bundle_dir)
    bundle.manifest.runtime = jetson_runtime(profile)
    write_manifest(bundle.root, bundle.manifest)
    return bundle_dir


def lcnet_jetson_bundle(work: Path) -> Path:
    """PP-LCNet text-orientation, really converted (FP32 ONNX), asking for TensorRT, CUDA, CPU."""
    if not LCNET.is_dir():
        pytest.skip(f"needs the shared models folder {SHARED}")
    return with_jetson_runtime(convert(LCNET / "model.onnx", DEMOS, work))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return lcnet_jetson_bundle(tmp_path_factory.mktemp("lcnet-jetson"))


# --- a TensorRT-first bundle on this machine ------------------------------------------------------

@needs_cpu_only_ort
def test_tensorrt_first_bundle_runs_on_the_cpu_and_says_so(bundle_dir, tmp_path, caplog):
    bundle = Bundle.open(bundle_dir)
    assert bundle.manifest.runtime.providers == JETSON
    state = tmp_path / "state"
    with caplog.at_level(logging.INFO, logger="runtimes.backends.onnxruntime"):
        task = load_task(bundle, RunContext(state_dir=state))
        results = task(read_image(IMAGES / "cls_img_rot180_demo.jpg")).results
    runner = task.runners()["classifier"]
    assert runner.backend.providers_in_use == [CPU]
    lines = [r.getMessage() for r in caplog.records]
    assert ("classifier.fp32.onnx: runs on CPUExecutionProvider (TensorrtExecutionProvider, CUDAExecutionProvider "
            f"not available in this onnxruntime {ort.__version__})") in lines
    assert not any("TensorRT engine" in line for line in lines), lines
    assert not (state / "tensorrt").exists()         # no cache folders for a provider that cannot run here
    assert results[0]["label"] == "180"               # and the model still answers right on the CPU


@needs_cpu_only_ort
def test_without_a_state_folder_tensorrt_caches_go_to_the_user_cache(bundle_dir, tmp_path, monkeypatch):
    """`edge infer` has no state folder: the engine cache must not land in the current directory. The options
    are prepared as on a Jetson (this does not run TensorRT: the session here has the CPU only)."""
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.chdir(tmp_path)
    bundle = Bundle.open(bundle_dir)
    artifact = bundle.manifest.model("classifier").selected_artifact()
    backend = OnnxRuntimeBackend(bundle.path_of(artifact.path), bundle.manifest.runtime, RunContext(), artifact)
    options = backend.tensorrt_options(jetson_runtime().provider_options[0])
    engines = Path(options["trt_engine_cache_path"])
    assert engines.parent == tmp_path / "user-cache" / "tensorrt" / "engines" and engines.is_dir()
    assert engines.name.startswith(f"classifier.fp32-{artifact.sha256[:12]}-")
    assert Path(options["trt_timing_cache_path"]) == tmp_path / "user-cache" / "tensorrt" / "timing"
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (False, False)   # an FP32 file stays FP32
    assert options["trt_max_workspace_size"] == 1 << 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user-cache"]


# --- TensorRT options, as a Jetson gets them ----------------------------------------------------

def test_precision_flags_follow_the_artifact():
    orin = jetson_runtime("jetson-orin").provider_options[0]
    assert orin["trt_int8_enable"] is True and orin["trt_fp16_enable"] is True
    for precision, fp16, int8 in (("fp32", False, False), ("fp16", True, False), ("int8", True, True)):
        narrowed = tensorrt_precision_options(orin, precision)
        assert (narrowed["trt_fp16_enable"], narrowed["trt_int8_enable"]) == (fp16, int8), precision
        assert narrowed["trt_engine_cache_enable"] is True
    # A QDQ model must never get a calibration table (TensorRT refuses one beside Q/DQ nodes).
    with_table = {**orin, "trt_int8_calibration_table_name": "calib.flatbuffers"}
    assert "trt_int8_calibration_table_name" not in tensorrt_precision_options(with_table, "int8")
    # The Nano profile allows FP16 only; its FP16 artifact gets it, the INT8 flag stays off.
    nano = jetson_runtime("jetson-nano").provider_options[0]
    assert nano["trt_int8_enable"] is False
    assert tensorrt_precision_options(nano, "fp16")["trt_fp16_enable"] is True
    assert tensorrt_precision_options(orin, None) == orin          # artifact unknown: as the profile wrote it


def test_jetson_profiles_put_caches_under_the_state_folder_with_a_bounded_workspace():
    for name, workspace in (("jetson-orin", 1 << 30), ("jetson-nano", 1 << 29), ("jetson", 1 << 29)):
        runtime = jetson_runtime(name)
        trt = runtime.provider_options[0]
        assert runtime.providers == JETSON and runtime.provider_options[1:] == [{}, {}], name
        assert trt["trt_engine_cache_enable"] is True and trt["trt_timing_cache_enable"] is True, name
        assert not Path(trt["trt_engine_cache_path"]).is_absolute(), name      # resolved on the device
        assert not Path(trt["trt_timing_cache_path"]).is_absolute(), name
        assert trt["trt_max_workspace_size"] == workspace, name


def test_cache_paths_resolve_under_the_state_folder_one_engine_folder_per_model(tmp_path):
    state = tmp_path / "state"
    options = tensorrt_precision_options(jetson_runtime().provider_options[0], "int8")
    det = engine_folder_name(Path("det.int8.onnx"), "a" * 64, options)
    resolved, engine_dir = tensorrt_cache_options(options, state, det)
    assert engine_dir == state / "tensorrt" / "engines" / det and engine_dir.is_dir()
    assert resolved["trt_engine_cache_path"] == str(engine_dir)
    assert resolved["trt_timing_cache_path"] == str(state / "tensorrt" / "timing")
    assert (state / "tensorrt" / "timing").is_dir()
    # Another model file, or other engine-shaping options, get another folder; the same ones the same.
    assert engine_folder_name(Path("det.int8.onnx"), "b" * 64, options) != det
    fp16 = tensorrt_precision_options(jetson_runtime().provider_options[0], "fp16")
    assert engine_folder_name(Path("det.int8.onnx"), "a" * 64, fp16) != det
    assert engine_folder_name(Path("det.int8.onnx"), "a" * 64, dict(options)) == det
    # An absolute path in the bundle is kept; caching off means no engine folder at all.
    absolute, _ = tensorrt_cache_options({**options, "trt_timing_cache_path": str(tmp_path / "t")}, state, det)
    assert absolute["trt_timing_cache_path"] == str(tmp_path / "t")
    off, no_dir = tensorrt_cache_options({**options, "trt_engine_cache_enable": False}, state, det)
    assert no_dir is None and "trt_engine_cache_path" not in off
    assert off["trt_timing_cache_path"] == str(state / "tensorrt" / "timing")


# --- the message, decided from provider lists (not a claim that TensorRT ran) -----------------------

def test_engine_build_is_announced_only_when_tensorrt_is_in_the_session_and_nothing_is_cached(tmp_path):
    assert builds_tensorrt_engine(JETSON, engine_cached=False)
    assert not builds_tensorrt_engine(JETSON, engine_cached=True)
    assert not builds_tensorrt_engine([CUDA, CPU], engine_cached=False)
    assert not builds_tensorrt_engine([CPU], engine_cached=False)
    folder = tmp_path / "engines"
    assert not has_cached_engine(None) and not has_cached_engine(folder)
    folder.mkdir()
    (folder / "TensorrtExecutionProvider_cache_sm87.timing").write_bytes(b"")   # a timing cache is no engine
    assert not has_cached_engine(folder)
    (folder / "TensorrtExecutionProvider_TRTKernel_graph_main_0_0_sm87.engine").write_bytes(b"")
    assert has_cached_engine(folder)
    assert "building a TensorRT engine" in engine_build_message("det.int8.onnx", folder)
    assert str(folder) in engine_build_message("det.int8.onnx", folder)


def test_providers_report_names_what_runs_and_what_is_missing():
    assert providers_report("det", JETSON, [CPU], [CPU]) == (
        f"det: runs on CPUExecutionProvider (TensorrtExecutionProvider, CUDAExecutionProvider not available in "
        f"this onnxruntime {ort.__version__})")
    assert providers_report("det", [CPU], [CPU], [CPU]) == "det: runs on CPUExecutionProvider"
    # TensorRT installed but refused by the session (e.g. an option this onnxruntime rejects): said apart.
    refused = providers_report("det", JETSON, JETSON, [CUDA, CPU])
    assert refused.startswith("det: runs on CUDAExecutionProvider (then CPUExecutionProvider")
    assert "TensorrtExecutionProvider could not be used here" in refused
    both = providers_report("det", JETSON, JETSON, JETSON)
    assert both == ("det: runs on TensorrtExecutionProvider (then CUDAExecutionProvider, CPUExecutionProvider "
                    "for the nodes it does not take)")
