"""Full-INT8 Paddle Lite for ARM, for real, on PP-LCNet orientation (the small family; PicoDet and the
others are measured outside the suite): Paddle's own PTQ writes a quantized legacy program, Paddle
Inference runs it (simulating the int8 rounding), the family metric judges it on held-out pictures,
and the builder ships an ARM INT8 `.nb` made by the real toolchain's opt, whose check record says
what ran here and that the `.nb` itself did not. An ONNX source is refused.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import device_profiles
from converters.builders import BUILDERS
from converters.families import family_for
from converters.passes.base import ModelFile, PassContext, Target
from converters.passes.paddle_ptq import RANGE_ALGOS, WORKER, PaddlePtqPass
from converters.runners.paddle_inference import PaddleInferenceRunner
from converters.sources import load_source
from converters.worker_call import call_paddle_worker
from runtimes.bundle import ArtifactCheck
from runtimes.errors import ConversionError

from ..paddle_lite_support import IMAGES, LCNET, needs_lcnet, paddle_lite_cache, paddle_lite_root  # noqa: F401

pytestmark = needs_lcnet
# orientation is for pages: calibrate on pages and a photo of one, judge on pictures never calibrated on
CALIB = [IMAGES / n for n in ("det_layout.jpg", "ocr_1.jpg", "ocr_en_img623.jpg", "cls_img_rot180_demo.jpg")]
VAL = [IMAGES / n for n in ("cls_img_rot0_demo.jpg", "ocr_11.jpg")]
FP32_ONNX = LCNET / "model.onnx"        # the trained original the Paddle files were converted from


def _ctx(workdir: Path, source, profile: str = "rpi4") -> PassContext:
    p = device_profiles.load(profile)
    target = Target(p.name, p.arch, p.accelerator, "paddle_lite", "int8", quantization="qdq-s8a-s8w", cpu=p.cpu,
                    paddle_lite_targets=tuple(p.paddle_lite.valid_targets) if p.paddle_lite else ())
    family = family_for("classification", {"classifier": source.spec})
    return PassContext(workdir, target, "classifier", options={
        "family": family, "fp32_models": {"classifier": FP32_ONNX}, "calib_images": CALIB, "val_images": VAL,
        "threads": 2, "source": source})


def _op_types(program: Path) -> dict[str, int]:
    counts = call_paddle_worker("census", "census", module=WORKER, model=str(program))
    return {k: counts["int8"].get(k, 0) + counts["float_or_other"].get(k, 0)
            for k in {**counts["int8"], **counts["float_or_other"]}}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> ModelFile:
    source = load_source(LCNET)
    ctx = _ctx(tmp_path_factory.mktemp("ptq"), source)
    return PaddlePtqPass().run(ModelFile(source.model_file, source.format), ctx)


def test_ptq_writes_a_legacy_program_with_quantize_ops(quantized):
    notes = quantized.notes["paddle_ptq"]
    assert quantized.format == "paddle-legacy" and quantized.precision == "int8"
    assert quantized.path.suffix == ".pdmodel" and quantized.path.with_suffix(".pdiparams").is_file()
    ops = _op_types(quantized.path)
    source_ops = _op_types(load_source(LCNET).model_file)
    assert "quantize_linear" not in source_ops and "dequantize_linear" not in source_ops
    # every conv input and weight goes through quantize/dequantize: 32 convolutions + the classifier matmul
    assert ops["quantize_linear"] >= 30 and ops["dequantize_linear"] >= 2 * 30
    assert notes["accepted"] and notes["calibration_method"] in RANGE_ALGOS
    assert [c["algo"] for c in notes["candidates"]] == list(RANGE_ALGOS[:len(notes["candidates"])])
    assert notes["calibration"] == {"inputs": 16, "pictures": 4, "validation_pictures": 2}
    assert notes["value"] >= notes["budget"] and notes["samples"] == 4 * len(VAL)


def test_paddle_inference_runs_the_quantized_program_and_the_family_judges_it(quantized):
    source = load_source(LCNET)
    family = family_for("classification", {"classifier": source.spec})
    fp32 = {"classifier": FP32_ONNX}
    feeds = family.latency_feeds("classifier", fp32, VAL, 4)
    reference = ort.InferenceSession(str(FP32_ONNX), providers=["CPUExecutionProvider"])
    with PaddleInferenceRunner(source.model_file, source.params_file, 1) as plain:
        assert plain.quant_ops == 0
        float_diff = max(float(np.abs(plain.run(None, f)[0] - reference.run(None, f)[0]).max()) for f in feeds)
    with PaddleInferenceRunner(quantized.path, quantized.path.with_suffix(".pdiparams"), 1) as runner:
        assert runner.quant_ops > 0 and "Paddle Inference" in runner.description
        quant_diff = max(float(np.abs(runner.run(None, f)[0] - reference.run(None, f)[0]).max()) for f in feeds)
        verdict = family.evaluate("classifier", fp32, runner, VAL)
    # the FP32 program reproduces the ONNX original; the quantized one really rounds (not folded away)
    assert float_diff < 1e-4 < quant_diff
    assert verdict.samples == 4 * len(VAL)
    assert verdict.value == quantized.notes["paddle_ptq"]["value"] and verdict.passed


def test_builder_ships_an_arm_int8_nb_and_says_it_was_not_executed(tmp_path, paddle_lite_cache):
    source = load_source(LCNET)
    result = BUILDERS[("paddle_lite", "int8")](ModelFile(FP32_ONNX, "onnx"), _ctx(tmp_path, source))
    assert result.artifact is not None, result.reason       # measured: LCNet passes with every range algorithm
    artifact = result.artifact
    assert artifact.path.suffix == ".nb" and artifact.format == "paddle_lite" and artifact.precision == "int8"
    # int8 weights: well under half the FP32 weights file
    assert artifact.path.stat().st_size < 0.5 * source.params_file.stat().st_size
    check = ArtifactCheck.model_validate(artifact.checks[0])
    assert "quantized legacy program" in check.executed and "Paddle Inference" in check.executed
    assert "simulated quantization" in check.executed
    assert "INT8 .nb itself" in check.not_executed and "segfault" in check.not_executed
    assert check.passed and check.value >= check.budget and check.metric.startswith("top1_agreement")
    assert check.validation_pictures == [p.name for p in VAL] and check.calibration_pictures == [p.name for p in CALIB]
    details = check.details
    assert details["op_report"]["valid_targets"] == ["arm"] and details["op_report"]["supported"]
    # opt set the convolutions to int8 in the program the .nb comes from
    assert details["opt_program_ops"]["int8"].get("conv2d", 0) > 0
    assert details["calibration_method"] in RANGE_ALGOS and details["layers_in_float"] == artifact.fp32_nodes
    assert re.search(r"\d\.\d{4}", result.reason) and "not executed" in result.reason


def test_onnx_source_and_x86_profile_are_refused(tmp_path):
    onnx_source = load_source(FP32_ONNX)
    build, fp32 = BUILDERS[("paddle_lite", "int8")], ModelFile(FP32_ONNX, "onnx")
    refused = build(fp32, _ctx(tmp_path, onnx_source))
    assert refused.artifact is None and refused.reason.startswith("refused: the source is an ONNX model")
    x86 = build(fp32, _ctx(tmp_path, load_source(LCNET), "x86-avx2"))
    assert x86.artifact is None and "ARM profiles" in x86.reason
    with pytest.raises(ConversionError, match="legacy Paddle programs"):
        PaddlePtqPass().run(ModelFile(FP32_ONNX, "onnx"), _ctx(tmp_path, onnx_source))


def _program(path: Path) -> tuple[list, list]:
    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc()
    desc.ParseFromString(path.read_bytes())
    ops = sorted((op.type, str(op.inputs), str(op.outputs), sorted(a.SerializeToString() for a in op.attrs))
                 for op in desc.blocks[0].ops)
    return ops, sorted(v.SerializeToString() for v in desc.blocks[0].vars)


def test_quantized_program_is_the_same_without_paddles_node_scans(quantized, monkeypatch):
    """The worker links graph nodes without Paddle's whole-graph membership scans and looks scale nodes up in
    an index instead of a set rebuilt per lookup (the PTQ's main costs): the program written must hold the
    same operators and variables, and the same weights, as with Paddle's own code (EDGE_PTQ_PADDLE_LINKS=1;
    their order among independent operators varies between Paddle's own runs)."""
    work, source = quantized.path.parents[1], load_source(LCNET)
    outs = {}
    for tag, own_links in (("shortcut", None), ("paddle", "1")):
        if own_links:
            monkeypatch.setenv("EDGE_PTQ_PADDLE_LINKS", own_links)
        jobs = work / f"links_{tag}.json"
        jobs.write_text(json.dumps({"model": str(source.model_file), "params": str(source.params_file),
                                    "feeds": str(work / "calibration.npz"),
                                    "jobs": [{"algo": "avg", "out": str(work / f"links_{tag}"), "skip": [],
                                              "probe": 0}]}), encoding="utf-8")
        call_paddle_worker("quantize", "links", module=WORKER, jobs=str(jobs))
        outs[tag] = work / f"links_{tag}"
    assert _program(outs["shortcut"] / "model.pdmodel") == _program(outs["paddle"] / "model.pdmodel")
    assert (outs["shortcut"] / "model.pdiparams").read_bytes() == (outs["paddle"] / "model.pdiparams").read_bytes()


def test_search_session_judges_as_a_worker_of_its_own_would(quantized, tmp_path):
    """The PTQ search runs its jobs and its judging in one worker (paddle_ptq_worker serve): a program opened
    there gives the outputs a Paddle Inference worker of its own gives, and a command that fails answers with
    one error while the session goes on."""
    from runtimes.errors import BackendError
    from runtimes.workers.client import WorkerProcess

    program = quantized.path
    feed = {"x": np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    with PaddleInferenceRunner(program, program.with_suffix(".pdiparams"), 2) as alone:
        name = alone.get_inputs()[0].name
        expected = alone.run(None, {name: feed["x"]})
    session = WorkerProcess([sys.executable, "-m", WORKER, "serve"], {}, "ptq session",
                            {"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        with pytest.raises(BackendError, match="open failed: .*no_such"):
            session.command("open", model=str(tmp_path / "no_such.pdmodel"), params=str(tmp_path / "no_such.pdiparams"),
                            threads=1)
        with PaddleInferenceRunner(program, program.with_suffix(".pdiparams"), 2, session=session) as shared:
            assert shared.quant_ops > 0
            got = shared.run(None, {name: feed["x"]})
        assert session.pid is not None          # closing the runner left the session running
        for a, b in zip(expected, got):
            np.testing.assert_array_equal(a, b)
    finally:
        session.close()
