"""Paddle Lite `.nb` for ARM, for real: a PIR export written as a legacy program and proven equal, `opt`
making ARM and x86 files with its operator report, and the FP32/FP16 builders on PP-LCNet whose check
records say what ran here (the x86 twin, an FP16-rounded reference) and what did not (the ARM file).

Uses the real paddle-lite toolchain (installed once per session by tests/paddle_lite_support.py),
real shared exports and real pictures.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import device_profiles
from converters.builders import BUILDERS
from converters.families import family_for
from converters.passes.base import ModelFile, PassContext, Target
from converters.passes.paddle_lite_opt import PaddleLiteOptPass
from converters.passes.pir_to_legacy import PirToLegacyPass
from converters.pipeline import FP32_PASSES
from converters.runners.paddle_lite_twin import PaddleLiteTwinRunner
from converters.sources import load_source
from converters.worker_call import call_paddle_worker
from runtimes.bundle import ArtifactCheck
from runtimes.errors import ConversionError
from runtimes.image import read_image
from runtimes.tasks.preprocess import Preprocess

from ..paddle_lite_support import IMAGES, LCNET, needs_lcnet, paddle_lite_cache, paddle_lite_root  # noqa: F401

pytestmark = needs_lcnet
PICTURES = [IMAGES / "cls_img_rot0_demo.jpg", IMAGES / "cls_img_rot180_demo.jpg", IMAGES / "ocr_1.jpg"]

# a one-conv program followed by lgamma, an operator neither Paddle Lite nor our PIR rules know
TINY_PROGRAMS = """
import sys, paddle
out = sys.argv[1]
class Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3)
    def forward(self, x):
        return paddle.lgamma(self.conv(x))
net = Net()
net.eval()
paddle.jit.save(net, out + "/pir/model", input_spec=[paddle.static.InputSpec([1, 3, 8, 8], "float32", "x")])
paddle.enable_static()
with paddle.pir_utils.OldIrGuard():
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [1, 3, 8, 8], "float32")
        y = paddle.static.nn.conv2d(x, 4, 3)
        lg = main.global_block().create_var(name="lg", dtype="float32", shape=y.shape)
        main.global_block().append_op(type="lgamma", inputs={"X": [y]}, outputs={"Out": [lg]})
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    paddle.static.save_inference_model(out + "/legacy/model", [x], [lg], exe, program=main)
"""


def _target(profile: str, precision: str) -> Target:
    p = device_profiles.load(profile)
    return Target(p.name, p.arch, p.accelerator, "paddle_lite", precision, cpu=p.cpu,
                  cpu_features=tuple(p.cpu_features), paddle_lite_targets=tuple(p.paddle_lite.valid_targets))


def _ctx(workdir: Path, target: Target, source, **options) -> PassContext:
    return PassContext(workdir, target, source.spec.role, options={"source": source, "val_images": PICTURES,
                                                                     "calib_images": [], "threads": 1, **options})


@pytest.fixture(scope="module")
def tiny_programs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lgamma")
    script = out / "make.py"             # a file: paddle.jit.save reads the forward's source
    script.write_text(TINY_PROGRAMS, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def lcnet_pir(tmp_path_factory):
    """The PIR export of PP-LCNet orientation, its FP32 ONNX reference made by the converter's own passes."""
    source = load_source(LCNET / "pir")
    workdir = tmp_path_factory.mktemp("lcnet")
    ctx = _ctx(workdir, _target("rpi4", "fp32"), source, params_file=source.params_file)
    model = ModelFile(source.model_file, source.format)
    for step in FP32_PASSES:
        model = step.run(model, ctx)
    family = family_for("classification", {"classifier": source.spec})
    return source, model, family, workdir


def _paddle_outputs(model: Path, inputs: Path, out: Path) -> np.lib.npyio.NpzFile:
    call_paddle_worker("infer", "test", model=model, params=model.with_suffix(".pdiparams"), inputs=inputs, out=out)
    return np.load(out)


def test_pir_export_becomes_a_legacy_program_with_the_same_weights_and_outputs(tmp_path):
    source = load_source(LCNET / "pir")
    ctx = _ctx(tmp_path, _target("rpi4", "fp32"), source)
    legacy = PirToLegacyPass().run(ModelFile(source.model_file, source.format), ctx)
    assert legacy.format == "paddle-legacy" and legacy.path.suffix == ".pdmodel"
    assert legacy.path.read_bytes()[:1] != b"{"                       # a ProgramDesc protobuf, not PIR JSON
    notes = legacy.notes["pir_to_legacy"]
    assert notes["weights_equal"] == "bytes" and notes["max_rel_diff"] <= 1e-5 and notes["inputs_compared"] == 2
    # checked again here, independently of the pass: same weight bytes, same outputs in Paddle Inference
    assert legacy.path.with_suffix(".pdiparams").read_bytes() == source.params_file.read_bytes()
    pre = Preprocess(source.spec.preprocess)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, **{f"p{i}": pre(read_image(p))[0] for i, p in enumerate(PICTURES)})
    ours = _paddle_outputs(legacy.path, inputs, tmp_path / "legacy.npz")
    theirs = _paddle_outputs(source.model_file, inputs, tmp_path / "pir.npz")
    for key in theirs.files:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-5 * np.abs(theirs[key]).max())


def test_pir_operation_without_a_legacy_rule_is_named(tiny_programs, tmp_path):
    source = load_source(LCNET / "pir")          # metadata and pictures for the check; the program is the tiny one
    with pytest.raises(ConversionError, match=r"no legacy translation for pd_op\.lgamma"):
        PirToLegacyPass().run(ModelFile(tiny_programs / "pir" / "model.json", "paddle-pir"),
                              _ctx(tmp_path, _target("rpi4", "fp32"), source))


def test_opt_makes_an_arm_nb_and_an_x86_twin_that_runs_like_the_onnx_original(paddle_lite_cache, tmp_path):
    source = load_source(LCNET)
    legacy = ModelFile(source.model_file, source.format)
    ctx = _ctx(tmp_path, _target("rpi4", "fp32"), source)
    arm = PaddleLiteOptPass().run(legacy, ctx)
    twin = PaddleLiteOptPass(("x86",)).run(legacy, ctx)
    for nb, place in ((arm, "kARM"), (twin, "kX86")):
        notes = nb.notes["paddle_lite_opt"]
        assert nb.path.suffix == ".nb" and nb.path.stat().st_size > 1_000_000       # the weights are in it
        assert notes["op_report"]["supported"] and notes["op_report"]["unsupported"] == []
        assert place in notes["op_report"]["ops"]["conv2d"]
    assert arm.notes["paddle_lite_opt"]["valid_targets"] == ["arm"] and arm.path != twin.path
    feed = Preprocess(source.spec.preprocess)(read_image(PICTURES[0]))[0]
    session = ort.InferenceSession(str(LCNET / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: feed})[0]
    with PaddleLiteTwinRunner(twin.path) as runner:
        assert "x86 runtime" in runner.description
        got = runner.run(None, {session.get_inputs()[0].name: feed})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_twin_runner_gives_every_new_input_shape_a_fresh_predictor(paddle_lite_cache, tmp_path):
    """Paddle Lite 2.13rc0's x86 runtime returns a wrong map (or crashes) when one predictor sees a second shape;
    three real pages of two sizes through one runner must still equal Paddle Inference."""
    det = load_source(LCNET.parents[1] / "PP-OCR" / "ch_PP-OCRv4_det")
    twin = PaddleLiteOptPass(("x86",)).run(ModelFile(det.model_file, det.format),
                                           _ctx(tmp_path, _target("rpi4", "fp32"), det))
    pre = Preprocess(det.spec.preprocess)
    pages = {f"p{i}": pre(read_image(IMAGES / name))[0]
             for i, name in enumerate(("ocr_11.jpg", "ocr_en_img623.jpg", "ocr_11.jpg"))}
    assert pages["p0"].shape != pages["p1"].shape
    np.savez(tmp_path / "pages.npz", **pages)
    reference = _paddle_outputs(det.model_file, tmp_path / "pages.npz", tmp_path / "paddle.npz")
    with PaddleLiteTwinRunner(twin.path) as runner:
        for key, page in pages.items():
            np.testing.assert_allclose(runner.run(None, {"x": page})[0], reference[f"{key}__0"], atol=1e-3)
        assert runner.restarts == 2


def test_opt_refuses_an_unsupported_operator_with_its_reason(paddle_lite_cache, tiny_programs, tmp_path):
    source = load_source(LCNET)
    with pytest.raises(ConversionError, match=r"not supported on 'arm'.*'lgamma'") as caught:
        PaddleLiteOptPass().run(ModelFile(tiny_programs / "legacy" / "model.pdmodel", "paddle-legacy"),
                                _ctx(tmp_path, _target("rpi4", "fp32"), source))
    assert "\n" not in str(caught.value)


def _built(lcnet_pir, precision: str, profile: str):
    source, fp32, family, workdir = lcnet_pir
    ctx = _ctx(workdir, _target(profile, precision), source, family=family,
               fp32_models={"classifier": fp32.path})
    return BUILDERS[("paddle_lite", precision)](fp32, ctx)


def test_fp32_builder_ships_an_arm_nb_proven_by_its_x86_twin(paddle_lite_cache, lcnet_pir):
    result = _built(lcnet_pir, "fp32", "rpi4")
    art = result.artifact
    assert art is not None, result.reason
    assert (art.format, art.precision, art.target) == ("paddle_lite", "fp32", "aarch64") and art.path.is_file()
    (check,) = art.checks
    ArtifactCheck(**check)                                   # a valid manifest record
    assert check["executed"].startswith("the x86 twin") and "Paddle Lite 2.13rc0 x86 runtime" in check["executed"]
    assert "ARM .nb itself" in check["not_executed"] and "no ARM CPU" in check["not_executed"]
    assert check["passed"] and check["metric"] == "top1_agreement vs fp32" and check["value"] == 1.0
    assert check["validation_pictures"] == [p.name for p in PICTURES]
    details = check["details"]
    assert details["op_report"]["arm"]["supported"] and details["op_report"]["arm"]["valid_targets"] == ["arm"]
    assert details["pir_to_legacy"]["weights_equal"] == "bytes"
    assert details["outputs_vs_fp32_onnx"]["max_rel_diff"] < 1e-3
    assert "not executed" in result.reason


def test_fp16_builder_says_the_twin_ran_in_fp32_and_checks_fp16_rounding(paddle_lite_cache, lcnet_pir):
    result = _built(lcnet_pir, "fp16", "rpi5")
    art = result.artifact
    assert art is not None, result.reason
    assert (art.format, art.precision, art.target) == ("paddle_lite", "fp16", "aarch64")
    twin, rounding = art.checks
    for check in (twin, rounding):
        ArtifactCheck(**check)
        assert check["passed"]
    assert "--enable_fp16 true" in twin["executed"] and "ARM .nb itself" in twin["not_executed"]
    assert twin["executed"].endswith("which computed in FP32: the x86 build has no FP16 kernels")
    assert twin["details"]["twin_computes_fp16"] is False and "no FP16 kernel" in twin["details"]["why"]
    reports = twin["details"]["op_report"]
    assert reports["arm"]["kernels"]["fp16_ops"]["conv2d"] > 10                # FP16 kernels in the ARM file
    assert reports["x86_twin"]["kernels"]["fp16_ops"] == {}                     # and none in its twin
    assert set(reports["x86_twin"]["kernels"]["by_place"]) <= {"x86/float", "host/float", "host/any", "x86/any"}
    assert "rounded to FP16" in rounding["executed"] and "graph optimisations off" in rounding["executed"]
    assert rounding["not_executed"].startswith("FP16 arithmetic")
    assert rounding["details"]["tensors_rounded"] > 100
    assert 0 < rounding["details"]["outputs_vs_fp32_onnx"]["max_abs_diff"] < 0.05     # rounding did happen


def test_onnx_source_is_refused_with_the_reason(tmp_path):
    source = load_source(LCNET / "model.onnx")
    ctx = _ctx(tmp_path, _target("rpi4", "fp32"), source)
    result = BUILDERS[("paddle_lite", "fp32")](ModelFile(source.model_file, "onnx"), ctx)
    assert result.artifact is None
    assert result.reason.startswith("refused: the source is an ONNX model") and "Paddle program" in result.reason
