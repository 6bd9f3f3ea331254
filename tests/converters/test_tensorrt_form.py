"""Jetson INT8 in TensorRT's explicit-quantization form, on the real PicoDet COCO model and real pictures.

The FP32 graph is made by the converter's own passes from the shared Paddle export; the INT8 artifact by
the real ONNX INT8 builder for a Jetson target (calibrated on street photos, judged on held-out people
photos). Nothing here executes TensorRT: the file runs in onnxruntime's CPU provider and its form is
proven by reading the graph. The structural check must also fail: on our x86 INT8 (uint8 activations,
non-zero zero points, Q/DQ everywhere), on a QOperator model, and on a damaged copy of a good file.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from converters.builders.onnx_int8 import build_onnx_int8
from converters.calibration import collect_stats, write_range_cache
from converters.checks.tensorrt_form import EXECUTED, METRIC, check_tensorrt_form
from converters.families import family_for
from converters.package import BuiltModel, write_bundle
from converters.passes.base import ModelFile, PassContext, Target
from converters.passes.optimize import OptimizePass
from converters.passes.paddle_to_onnx import PaddleToOnnxPass
from converters.passes.quantize import build_int8, int8_form
from converters.passes.repair import RepairPass
from converters.runners.onnx_unoptimized import OnnxUnoptimizedRunner
from converters.sources import load_source
from runtimes.bundle import ArtifactCheck, RuntimeOptions

EXPORT = "PP-PicoDet/picodet_s_320_coco"
CALIBRATION = ("coco_bus.jpg", "coco_zidane.jpg", "det_000000014439.jpg", "det_hrnet_demo.jpg")   # street
HELD_OUT = ("coco_dog.jpg", "lite_human.jpg", "seg_humanseg_demo.jpg", "seg_web_human.png")        # people
JETSON = Target(profile="jetson-orin", arch="aarch64", accelerator="cuda", format="onnx", precision="int8",
                quantization="qdq-s8a-s8w")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def picodet(shared_dir: Path, tmp_path_factory):
    """(source, family, FP32 reference as a Jetson conversion makes it (opset 13), calibration, held-out)."""
    work = tmp_path_factory.mktemp("picodet")
    source = load_source(shared_dir / "models" / EXPORT)
    family = family_for("detection", {"detector": source.spec})
    calib = [shared_dir / "images" / name for name in CALIBRATION]
    held_out = [shared_dir / "images" / name for name in HELD_OUT]
    fp32_target = Target(profile="jetson-orin", arch="aarch64", accelerator="cuda", format="onnx", precision="fp32")
    ctx = PassContext(work, fp32_target, "detector", options={"source": source, "params_file": source.params_file})
    model = ModelFile(source.model_file, source.format)
    for step in (PaddleToOnnxPass(), RepairPass()):
        model = step.run(model, ctx)
    ctx.options.update(family=family, fp32_models={"detector": model.path}, val_images=held_out)
    return source, family, OptimizePass().run(model, ctx), calib, held_out


@pytest.fixture(scope="module")
def jetson_int8(picodet, tmp_path_factory):
    """The builder's result for a Jetson (6 calibration inputs instead of 16, for test time: this file took
    31-99 s here, depending on what else ran)."""
    source, family, fp32, calib, held_out = picodet
    ctx = PassContext(tmp_path_factory.mktemp("jetson"), JETSON, "detector", options={
        "family": family, "fp32_models": {"detector": fp32.path}, "calib_images": calib, "val_images": held_out,
        "threads": 2, "source": source, "calib_limit": 6})
    return build_onnx_int8(fp32, ctx)


@pytest.fixture(scope="module")
def x86_form(picodet, tmp_path_factory) -> tuple[Path, Path]:
    """Our x86 int8 form of the same graph and its ranges (p99.999), for the models the check must refuse."""
    _, family, fp32, calib, _ = picodet
    work = tmp_path_factory.mktemp("x86")
    form = work / "form.onnx"
    int8_form(fp32.path, form)
    feeds = family.calibration_feeds("detector", {"detector": fp32.path}, calib, 6)
    return form, write_range_cache(collect_stats(form, feeds, work), "p99.999", work / "ranges.json")


def test_jetson_int8_meets_the_detection_budget_on_held_out_pictures(picodet, jetson_int8):
    _, family, fp32, _, held_out = picodet
    art = jetson_int8.artifact
    assert art is not None, jetson_int8.reason
    assert (art.format, art.precision, art.target, art.quantization) == ("onnx", "int8", "cuda", "qdq-s8a-s8w")
    # the family metric on pictures it was not calibrated on, with the file executed as written
    judged = family.evaluate("detector", {"detector": fp32.path}, OnnxUnoptimizedRunner(art.path, 2), held_out)
    assert judged.passed and judged.value >= 0.95 and judged.samples >= 10, judged.describe()
    first = art.checks[0]
    assert first["value"] == pytest.approx(judged.value, abs=1e-6) and first["passed"] is True
    assert first["executed"].startswith("this QDQ file in onnxruntime") and "graph optimisations off" in first["executed"]
    assert first["not_executed"] == "TensorRT (NVIDIA GPU): not executed here"
    assert first["validation_pictures"] == list(HELD_OUT) and first["calibration_pictures"] == list(CALIBRATION)
    assert "latency not measured (cuda target: the device measures it)" in jetson_int8.reason
    for check in art.checks:          # what the manifest will hold
        ArtifactCheck(**check)


def test_jetson_int8_is_in_tensorrt_form(jetson_int8):
    art = jetson_int8.artifact
    assert art is not None, jetson_int8.reason
    record = art.checks[1]
    assert (record["executed"], record["metric"], record["passed"]) == (EXECUTED, METRIC, True)
    d = record["details"]
    assert d["problems"] == [] and d["qoperator_ops"] == 0 and d["quantized_biases"] == 0
    assert d["weights"] == d["weights_per_channel"] > 100 and d["zero_points"] == d["zero_points_int8_zero"] > 0
    assert d["int8_inputs"]["Conv"] > 100 and d["qdq_pairs"] > 100
    # read again here, independently of the check: int8 zero points of 0, weights per output channel,
    # Q/DQ only into Conv/Add, the 87 hard-swishes kept as x * HardSigmoid(x) (opset 13), not the x86 int8 form
    model = onnx.load(str(art.path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert inits[node.input[2]].dtype == np.int8 and not inits[node.input[2]].any(), node.name
        for slot, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                assert node.op_type in ("Conv", "Add"), (node.op_type, node.name)
                if slot == 1 and node.op_type == "Conv":
                    w, scale = inits[dq.input[0]], inits[dq.input[1]]
                    assert scale.shape == (w.shape[0],), node.name
    ops = [n.op_type for n in model.graph.node]
    assert "HardSwish" not in ops and ops.count("HardSigmoid") >= 87
    assert not any(name.startswith("int8form_") for name in inits)


def test_structural_check_fails_on_the_x86_asymmetric_int8(x86_form, tmp_path):
    form, ranges = x86_form
    x86 = build_int8(form, tmp_path / "x86.int8.onnx", ranges, "qdq-u8a-s8w", [])
    report = check_tensorrt_form(x86)
    assert not report.passed
    assert any("uint8 zero point" in p for p in report.problems), report.problems[:5]
    assert any("where TensorRT does not fuse it" in p for p in report.problems), report.problems[:5]
    assert report.counts["zero_points_int8_zero"] < report.counts["zero_points"]
    assert "not in TensorRT's explicit-quantization form" in report.describe()


def test_structural_check_fails_on_a_qoperator_model(x86_form, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    form, ranges = x86_form
    out = tmp_path / "qoperator.onnx"
    quantize_static(str(form), str(out), None, quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibration_cache_path=str(ranges))
    report = check_tensorrt_form(out)
    assert not report.passed and report.counts["qoperator_ops"] > 100
    assert report.problems[0].startswith("QOperator ops, which TensorRT does not take:") and "QLinearConv" in report.problems[0]


def test_structural_check_names_each_departure_in_a_damaged_copy(jetson_int8, tmp_path):
    """A good file with one per-tensor weight, one non-zero zero point and one int32 bias: each is named."""
    art = jetson_int8.artifact
    assert art is not None, jetson_int8.reason
    model = onnx.load(str(art.path))
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv" and producer.get(n.input[1]) is not None]
    weight_dq = producer[convs[0].input[1]]
    g.initializer.append(numpy_helper.from_array(np.array(0.01, np.float32), "damaged_scale"))
    weight_dq.input[1] = "damaged_scale"
    act_q = next(n for n in g.node if n.op_type == "QuantizeLinear")
    g.initializer.append(numpy_helper.from_array(np.array(3, np.int8), "damaged_zp"))
    act_q.input[2] = "damaged_zp"
    biased = next(n for n in convs[1:] if len(n.input) > 2 and n.input[2] in inits)
    bias = numpy_helper.to_array(inits[biased.input[2]])
    g.initializer.extend([numpy_helper.from_array(np.round(bias / 1e-3).astype(np.int32), "damaged_bias_q"),
                          numpy_helper.from_array(np.array(1e-3, np.float32), "damaged_bias_scale")])
    g.node.append(helper.make_node("DequantizeLinear", ["damaged_bias_q", "damaged_bias_scale"], ["damaged_bias"],
                                   name="damaged_bias_dq"))
    biased.input[2] = "damaged_bias"
    path = tmp_path / "damaged.onnx"
    onnx.save(model, str(path))
    problems = check_tensorrt_form(path).problems
    assert any(p.startswith(f"Conv '{convs[0].name}': weights are not per channel on the output-channel axis 0")
               for p in problems), problems
    assert f"QuantizeLinear '{act_q.name}': non-zero int8 zero point 3 (asymmetric)" in problems
    assert f"Conv '{biased.name}': quantized bias (TensorRT takes a float bias)" in problems


def test_inspect_shows_both_checks(picodet, jetson_int8, tmp_path):
    source, *_ = picodet
    art = jetson_int8.artifact
    assert art is not None, jetson_int8.reason
    out = tmp_path / "bundle"
    write_bundle(out, pipeline="ppdet", task="detection", profile="jetson-orin",
                 runtime=RuntimeOptions(providers=["TensorrtExecutionProvider", "CPUExecutionProvider"]),
                 models=[BuiltModel(source, [art], 0, jetson_int8.reason)], outputs={}, metrics={})
    proc = subprocess.run([sys.executable, "-m", "edge", "inspect", str(out)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "limits: TensorRT (NVIDIA GPU): not executed here" in text
    assert f"checked: {EXECUTED}: {METRIC} passed" in text
    assert "verified: " in text and "weights per channel on the output-channel axis" in text
