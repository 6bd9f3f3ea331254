"""FP16 ONNX for Jetson, for real: PicoDet and PP-HumanSeg-Lite made FP16 by the converter's pass, judged
against their FP32 references with the family metric, and the rules that keep nodes in FP32 proven on real
models whose weights are rescaled (same function in exact arithmetic) until FP16 overflows or underflows.

FP32 references come from the shared exports through the converter's own FP32 passes; pictures are the
shared ones, calibration and judging sets disjoint as `edge convert` makes them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import device_profiles
from converters import builders
from converters.builders.onnx_fp16 import NOT_EXECUTED, build_onnx_fp16
from converters.families import family_for
from converters.latency import session
from converters.passes.base import ModelFile, PassContext, Target
from converters.calibration import collect_stats
from converters.passes.fp16 import ACTIVATION_LIMIT, FP16_MAX, Fp16Pass, activation_peaks, storage_twin, to_fp16
from converters.pipeline import fp32_reference
from converters.runners.onnx_unoptimized import OnnxUnoptimizedRunner
from converters.sources import load_source
from device_profiles import ArtifactChoice
from runtimes.bundle import ArtifactCheck

EXPORTS = {"detection": "PP-PicoDet/picodet_s_320_coco",
           "segmentation": "PP-HumanSeg-Lite/pp_humanseg_lite_portrait_398x224"}
# (calibration, judging) pictures per family, in-domain and disjoint
PICTURES = {"detection": (["coco_bus.jpg", "coco_zidane.jpg", "det_000000014439.jpg"],
                          ["coco_dog.jpg", "lite_human.jpg", "seg_web_human.png"]),
            "segmentation": (["seg_humanseg_demo.jpg", "coco_zidane.jpg"], ["lite_human.jpg", "seg_web_human.png"])}


def jetson_target(profile: str = "jetson-orin") -> Target:
    p = device_profiles.load(profile)
    return Target(p.name, p.arch, p.accelerator, "onnx", "fp16", opset=p.onnx.opset)


class Case:
    """One family's FP32 reference, family and pictures, and contexts for building from it."""

    def __init__(self, task: str, shared: Path, work: Path):
        self.source = load_source(shared / "models" / EXPORTS[task])
        self.role, self.work = self.source.spec.role, work
        calib, val = PICTURES[task]
        self.calib = [shared / "images" / name for name in calib]
        self.val = [shared / "images" / name for name in val]
        self.fp32 = fp32_reference(self.source, jetson_target(), work, self.val)
        self.family = family_for(task, {self.role: self.source.spec})

    def ctx(self, folder: str, fp32: Path | None = None, target: Target | None = None) -> PassContext:
        work = self.work / folder
        work.mkdir(exist_ok=True)
        return PassContext(work, target or jetson_target(), self.role, options={
            "family": self.family, "fp32_models": {self.role: fp32 or self.fp32.path}, "calib_images": self.calib,
            "val_images": self.val, "threads": 2, "source": self.source})


@pytest.fixture(scope="module")
def cases(shared_dir: Path, tmp_path_factory) -> dict[str, Case]:
    return {task: Case(task, shared_dir, tmp_path_factory.mktemp(task)) for task in EXPORTS}


@pytest.fixture(scope="module")
def built(cases, monkeypatch_module) -> dict[str, builders.BuildResult]:
    """Each family's FP16 artifact, built through the builder table as `edge convert` does (registered here)."""
    monkeypatch_module.setitem(builders.BUILDERS, ("onnx", "fp16"), build_onnx_fp16)
    builders.check_buildable(device_profiles.load("jetson-orin"))      # no longer refused up front
    choice = ArtifactChoice(format="onnx", precision="fp16")
    return {task: builders.build(choice, case.fp32, case.ctx("build")) for task, case in cases.items()}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("task", list(EXPORTS))
def test_fp16_artifact_meets_the_family_budget_and_says_what_ran(task, cases, built):
    case, result = cases[task], built[task]
    art = result.artifact
    assert art is not None, result.reason
    assert (art.format, art.precision, art.target) == ("onnx", "fp16", "cuda")
    twin, own = [ArtifactCheck.model_validate(c) for c in art.checks]
    for check in (twin, own):
        assert check.passed and check.metric.endswith("vs fp32")
        assert check.value >= check.budget            # both metrics here are agreements (higher is better)
        assert check.not_executed.startswith(NOT_EXECUTED)
        assert "TensorRT" not in check.executed and "CUDA" not in check.executed
        assert check.validation_pictures == [p.name for p in case.val]
        # not identical to FP32 (the FP16 values were used) and off by what FP16 rounding costs
        assert 0 < check.details["outputs_vs_fp32"]["rel_rms"] < 2e-2
    assert twin.details["casts_executed"] == twin.details["casts_in_twin"] > 0
    # onnxruntime's own profile decides what the record says ran on float16 and on float32
    assert own.details["kernels_on_float32"]["Conv"] > 0
    assert sum(own.details["kernels_on_float16"].values()) > 0
    # the recorded metric is what the family measures on the shipped file
    again = case.family.evaluate(case.role, {case.role: case.fp32.path}, art.path, case.val)
    assert again.value == pytest.approx(own.value, abs=1e-6)
    # most weights really are FP16; any kept FP32 node is listed with its cause
    model = onnx.load(str(art.path))
    kinds = [t.data_type for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert kinds.count(TensorProto.FLOAT16) > 0.9 * len(kinds)
    assert set(art.fp32_nodes) == set(twin.details["fp32_nodes"])
    assert all(why.startswith(("converter:", "activation:", "weights:", "metric:"))
               for why in twin.details["fp32_nodes"].values())


@pytest.mark.parametrize("task", list(EXPORTS))
def test_inputs_and_outputs_stay_float32(task, cases, built):
    art, case = built[task].artifact, cases[task]
    model = onnx.load(str(art.path))
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])
    feed = case.family.latency_feeds(case.role, {case.role: case.fp32.path}, case.val, 1)[0]
    assert all(value.dtype == np.float32 for value in feed.values())
    outputs = session(art.path, 1).run(None, feed)
    assert outputs and all(out.dtype == np.float32 and np.all(np.isfinite(out)) for out in outputs)


def test_activation_peaks_are_the_calibration_extremes(cases, tmp_path):
    """The pass measures only extremes, cheaply; they are the ones converters.calibration records."""
    case = cases["segmentation"]
    feeds = case.family.calibration_feeds(case.role, {case.role: case.fp32.path}, case.calib, 16)
    peaks = activation_peaks(case.fp32.path, feeds, tmp_path, 1)
    stats = collect_stats(case.fp32.path, feeds, tmp_path, threads=1)
    assert set(peaks) == set(stats) and len(peaks) > 50
    for name, rec in stats.items():
        assert peaks[name] == pytest.approx(max(abs(min(rec.mins)), abs(max(rec.maxs))), rel=1e-6)


def test_builder_refuses_cpu_targets(cases):
    case = cases["segmentation"]
    target = Target("x86-vnni", "x86_64", "cpu", "onnx", "fp16")
    result = build_onnx_fp16(case.fp32, case.ctx("cpu", target=target))
    assert result.artifact is None and result.reason.startswith("refused: FP16 ONNX is built for CUDA targets")


def conv_pair(model: onnx.ModelProto) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The first Conv whose output is read by exactly one node, itself a Conv."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return next((n, readers[n.output[0]][0]) for n in model.graph.node
                if n.op_type == "Conv" and [r.op_type for r in readers.get(n.output[0], [])] == ["Conv"])


def rescaled(case: Case, scale: float, name: str) -> tuple[Path, str, str]:
    """The FP32 reference with conv A's output multiplied by `scale` and conv B (its only reader) dividing
    it back: the same function in exact arithmetic, with A's output `scale` times larger."""
    model = onnx.load(str(case.fp32.path))
    first, second = conv_pair(model)
    inits = {t.name: t for t in model.graph.initializer}

    def replace(node: onnx.NodeProto, slot: int, factor: float) -> None:
        values = numpy_helper.to_array(inits[node.input[slot]]).astype(np.float64) * factor
        tensor = numpy_helper.from_array(values.astype(np.float32), f"{node.input[slot]}__scaled_{node.name}")
        model.graph.initializer.append(tensor)
        node.input[slot] = tensor.name

    for slot in range(1, len(first.input)):          # weights and bias of A
        replace(first, slot, scale)
    replace(second, 1, 1 / scale)                    # weights of B
    path = case.work / f"{name}.onnx"
    onnx.save(model, str(path))
    return path, first.name, second.name


def peak_of(case: Case, path: Path, tensor: str) -> float:
    model = onnx.load(str(path))
    model.graph.output.extend([onnx.ValueInfoProto(name=tensor)])
    probe = case.work / "probe.onnx"
    onnx.save(model, str(probe))
    feeds = case.family.calibration_feeds(case.role, {case.role: path}, case.calib, 16)
    sess = session(probe, 1)
    return max(float(np.max(np.abs(sess.run([tensor], f)[0]))) for f in feeds)


def test_a_tensor_beyond_fp16_keeps_its_writer_and_reader_in_fp32(cases):
    case = cases["segmentation"]
    plain = onnx.load(str(case.fp32.path))
    first, _ = conv_pair(plain)
    scale = 4 * FP16_MAX / peak_of(case, case.fp32.path, first.output[0])   # A's output peaks at 4x FP16's max
    path, a, b = rescaled(case, scale, "overflowing")
    assert peak_of(case, path, first.output[0]) > 2 * FP16_MAX > ACTIVATION_LIMIT
    ctx = case.ctx("overflow", fp32=path)
    result = Fp16Pass().run(ModelFile(path, "onnx"), ctx)
    notes = result.notes["fp16"]
    assert notes["accepted"] and result.precision == "fp16", notes["reason"]
    # B's weights were scaled down: only the tensor it reads can keep it in FP32. (A's weights grew past FP16
    # too; the record names the activation, the cause that also holds for its readers.)
    assert notes["fp32_nodes"][b].startswith("activation: reads")
    assert notes["fp32_nodes"][a].startswith("activation: writes")
    with OnnxUnoptimizedRunner(Path(notes["storage_twin"]), 1) as twin:
        feed = case.family.latency_feeds(case.role, {case.role: path}, case.val, 1)[0]
        assert all(np.all(np.isfinite(out)) for out in twin.run(None, feed))
    # Without the rule the same graph overflows: A's output stored in FP16 becomes inf, and the mask is lost.
    unruled = {n: why for n, why in notes["fp32_nodes"].items() if not why.startswith("activation:")}
    bare = to_fp16(path, ctx.workdir / "bare.onnx", set(unruled))
    bare_twin, _ = storage_twin(bare, ctx.workdir / "bare.twin.onnx")
    with OnnxUnoptimizedRunner(bare_twin, 1) as twin:
        assert not all(np.all(np.isfinite(out)) for out in twin.run(None, feed))
        assert not case.family.evaluate(case.role, {case.role: path}, twin, case.val).passed


def test_a_drifting_output_is_found_by_the_metric_and_kept_in_fp32(cases):
    case = cases["segmentation"]
    path, a, b = rescaled(case, 2.0 ** -24, "underflowing")   # A's output in FP16's subnormals, B's weights huge
    result = Fp16Pass().run(ModelFile(path, "onnx"), case.ctx("drift", fp32=path))
    notes = result.notes["fp16"]
    assert notes["accepted"], notes["reason"]
    assert notes["fp32_nodes"][b].startswith("weights:")              # |w| * 2**24 is beyond FP16
    assert notes["fp32_nodes"][a].startswith("metric: its output drifts most")
    assert notes["drift_ranking_top"][0]["node"] == a
    first, last = notes["candidates"][0], notes["candidates"][-1]
    assert not first["passed"] and last["passed"] and last["fp32_nodes"] > first["fp32_nodes"]
