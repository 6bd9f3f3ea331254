"""OpenVINO artifacts for x86, for real: PP-LCNet orientation and PicoDet-S-320 COCO through the OpenVINO builders
as `edge convert` calls them, judged against their FP32 ONNX references with the family metric.

FP32 references come from the shared exports through the converter's own FP32 passes; calibration and judging
pictures are disjoint. The INT8 builds are kept short for test time: PicoDet without the float fallback (~40 s
more here) and without the QDQ route (our quantize pass, ~45 s), LCNet with both routes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

import device_profiles
from converters import builders
from converters.families import family_for
from converters.package import BuiltModel, write_bundle
from converters.passes import openvino_latency
from converters.passes.base import ModelFile, PassContext, Target
from converters.pipeline import FP32_PASSES
from converters.pipeline import _target as pipeline_target
from converters.runners.openvino import OpenVinoRunner
from converters.sources import load_source
from device_profiles import ArtifactChoice
from runtimes.backends import create_backend
from runtimes.bundle import ArtifactCheck, Bundle

EXPORTS = {"classification": "PP-LCNet/PPLCNet_x1_0_text_image_orientation",
           "detection": "PP-PicoDet/picodet_s_320_coco"}
PICTURES = {"classification": (["ocr_1.jpg", "ocr_en_img623.jpg", "det_layout.jpg"],
                               ["cls_img_rot0_demo.jpg", "ocr_11.jpg"]),
            "detection": (["coco_bus.jpg", "coco_zidane.jpg", "det_000000014439.jpg", "det_hrnet_demo.jpg"],
                          ["coco_dog.jpg", "lite_human.jpg", "seg_humanseg_demo.jpg", "seg_web_human.png"])}
PROFILE = "x86-amx"
# INT8 options per family (see the module docstring); 6 calibration inputs instead of 16, for test time
INT8_OPTIONS = {"classification": {"calib_limit": 6},
                "detection": {"calib_limit": 6, "openvino_fallback": False, "openvino_qdq": False}}


def target(precision: str, arch: str | None = None) -> Target:
    p = device_profiles.load(PROFILE)
    choice = ArtifactChoice(format="openvino", precision=precision,
                            quantization="qdq-u8a-s8w" if precision == "int8" else None)
    made = pipeline_target(p, choice)
    return made if arch is None else Target(p.name, arch, "cpu", "openvino", precision)


class Case:
    def __init__(self, task: str, shared: Path, work: Path):
        self.source = load_source(shared / "models" / EXPORTS[task])
        self.role, self.work = self.source.spec.role, work
        self.calib = [shared / "images" / n for n in PICTURES[task][0]]
        self.val = [shared / "images" / n for n in PICTURES[task][1]]
        ctx = PassContext(work, target("fp32"), self.role, options={
            "source": self.source, "params_file": self.source.params_file, "val_images": self.val})
        model = ModelFile(self.source.model_file, self.source.format)
        for step in FP32_PASSES:
            model = step.run(model, ctx)
        self.fp32 = model
        self.family = family_for(task, {self.role: self.source.spec})
        self.fp32_models = {self.role: model.path}

    def ctx(self, precision: str, arch: str | None = None, **options) -> PassContext:
        return PassContext(self.work, target(precision, arch), self.role, options={
            "family": self.family, "fp32_models": self.fp32_models, "calib_images": self.calib,
            "val_images": self.val, "threads": 0, "source": self.source, **options})

    def feed(self) -> dict:
        return self.family.latency_feeds(self.role, self.fp32_models, self.val, 1)[0]


@pytest.fixture(scope="module")
def cases(shared_dir: Path, tmp_path_factory) -> dict[str, Case]:
    return {task: Case(task, shared_dir, tmp_path_factory.mktemp(task)) for task in EXPORTS}


@pytest.fixture(scope="module")
def built(cases) -> dict[tuple[str, str], builders.BuildResult]:
    """Every OpenVINO artifact of both families, through the builder table as `edge convert` builds them."""
    made = {}
    for task, case in cases.items():
        for precision in ("fp32", "bf16", "int8"):
            choice = ArtifactChoice(format="openvino", precision=precision,
                                    quantization="qdq-u8a-s8w" if precision == "int8" else None)
            options = INT8_OPTIONS[task] if precision == "int8" else {}
            made[(task, precision)] = builders.build(choice, case.fp32, case.ctx(precision, **options))
    return made


def bf16_cpu() -> bool:
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def output_names(xml: Path) -> list[str]:
    import openvino as ov
    return [o.get_any_name() for o in ov.Core().read_model(str(xml)).outputs]


@pytest.mark.parametrize("task", list(EXPORTS))
def test_f32_ir_matches_fp32_within_the_family_metric(task, cases, built):
    case, result = cases[task], built[(task, "fp32")]
    art = result.artifact
    assert art is not None, result.reason
    assert (art.format, art.precision, art.path.name) == ("openvino", "fp32", f"{case.role}.fp32.xml")
    assert art.companions == [art.path.with_suffix(".bin")] and art.companions[0].stat().st_size > 100_000
    check = ArtifactCheck.model_validate(art.checks[0])
    assert check.passed and check.value >= check.budget
    assert check.executed.startswith("this IR in OpenVINO 2026.4.1 CPU on x86_64, f32 execution")
    # both front ends were made, compared output by output with the FP32 reference, judged and timed
    ends = check.details["front_ends"]
    assert set(ends) == {"paddle", "onnx"} and check.details["front_end"] in ends
    assert ends["paddle"]["read_from"] == case.source.model_file.name
    for end in ends.values():
        assert end["max_abs_diff_vs_fp32_onnx"] < 1e-3 and set(end["latency_ms"]) == {"1", "2"}
    for t in (1, 2):
        assert art.metrics[f"latency_ms@{t}"] == pytest.approx(
            art.metrics[f"latency_ratio_vs_onnxruntime_fp32@{t}"] * art.metrics[f"latency_ms_onnxruntime_fp32@{t}"],
            rel=1e-3)
    # the IR keeps the reference's contract: output names (manifest `outputs`) by position
    reference = [o.name for o in onnx.load(str(case.fp32.path), load_external_data=False).graph.output]
    assert output_names(art.path) == reference
    again = case.family.evaluate(case.role, case.fp32_models, OpenVinoRunner(art.path, 2, "fp32"), case.val)
    assert again.passed and again.value == pytest.approx(check.value, abs=1e-6)


@pytest.mark.parametrize("task", list(EXPORTS))
def test_bf16_is_judged_in_bf16_execution(task, cases, built):
    case, result = cases[task], built[(task, "bf16")]
    art = result.artifact
    assert art is not None, result.reason
    assert (art.format, art.precision, art.path.name) == ("openvino", "bf16", f"{case.role}.bf16.xml")
    check = ArtifactCheck.model_validate(art.checks[0])
    assert "bf16 execution (INFERENCE_PRECISION_HINT bf16" in check.executed and check.passed
    assert check.details["inference_precision_hint"] == "bf16" and check.not_executed is None   # x86-amx lists it
    # bf16 really ran: OpenVINO says so, and its outputs are not the f32 ones
    bf16, f32 = OpenVinoRunner(art.path, 1, "bf16"), OpenVinoRunner(art.path, 1, "fp32")
    assert (bf16.precision, f32.precision) == ("bf16", "f32")
    feed = case.feed()
    drift = max(float(np.max(np.abs(a - b))) for a, b in zip(bf16.run(None, feed), f32.run(None, feed)))
    assert drift > 1e-6
    again = case.family.evaluate(case.role, case.fp32_models, OpenVinoRunner(art.path, 2, "bf16"), case.val)
    assert again.value == pytest.approx(check.value, abs=1e-6)


@pytest.mark.parametrize("task", list(EXPORTS))
def test_int8_meets_the_budget_or_is_refused_with_the_measured_reason(task, cases, built):
    case, result = cases[task], built[(task, "int8")]
    if result.artifact is None:
        # refused: the reason names what was measured (the metric, or the latencies)
        assert result.reason.startswith("refused: ")
        assert "misses budget" in result.reason or "is not faster than OpenVINO f32" in result.reason, result.reason
        return
    art = result.artifact
    assert (art.format, art.precision, art.quantization) == ("openvino", "int8", "qdq-u8a-s8w")
    check = ArtifactCheck.model_validate(art.checks[0])
    assert check.passed and check.details["route"] in ("nncf", "qdq")
    for t in (1, 2):       # faster than the f32 IR it replaces, timed in the same rounds
        assert art.metrics[f"latency_ms@{t}"] < art.metrics[f"latency_ms_openvino_f32@{t}"]
    import openvino as ov
    kinds = {op.get_type_name() for op in ov.Core().read_model(str(art.path)).get_ordered_ops()}
    assert "FakeQuantize" in kinds
    # judged as the device runs it: int8 operators, the float remainder in bf16 if that shipped
    again = case.family.evaluate(case.role, case.fp32_models, OpenVinoRunner(art.path, 2, art.execution_precision),
                                 case.val)
    assert again.passed and again.value == pytest.approx(check.value, abs=1e-6)
    remainder = check.details["float_remainder"]
    assert remainder["precision"] == (art.float_precision or "fp32") and remainder["why"]
    if art.float_precision == "bf16":       # shipped only when judged within budget and faster, both measured
        assert "float remainder in bf16" in check.executed and "within budget" in remainder["bf16_verdict"]
        threads = max(int(t) for t in remainder["latency_ms_bf16"])
        assert remainder["latency_ms_bf16"][str(threads)] < remainder["latency_ms_f32"][str(threads)]


def test_every_int8_route_says_what_it_measured(built):
    """PicoDet INT8 without float fallback missed the box-F1 budget here (0.29-0.88 over runs, histogram ranges);
    whatever the outcome, each route's record carries its numbers or why it was not tried."""
    result = built[("detection", "int8")]
    if result.artifact is None:
        assert "nncf: box_f1@0.5 vs fp32" in result.reason and "qdq: not tried (turned off)" in result.reason
    else:
        routes = result.artifact.checks[0]["details"]["routes"]
        assert routes["qdq"]["how"] == "not tried (turned off)" and "box_f1@0.5 vs fp32" in routes["nncf"]["verdict"]
    lcnet = built[("classification", "int8")]
    if lcnet.artifact is not None:
        routes = lcnet.artifact.checks[0]["details"]["routes"]
        assert set(routes) == {"nncf", "qdq"} and routes["nncf"]["candidates"]
        assert all("verdict" in r or r["how"].startswith("our quantize pass refused") for r in routes.values())


def test_bundle_ships_and_verifies_the_ir_weights(cases, built, tmp_path):
    case = cases["classification"]
    arts = [built[("classification", p)].artifact for p in ("bf16", "fp32", "int8")]
    arts = [a for a in arts if a is not None]
    out = tmp_path / "bundle"
    write_bundle(out, pipeline="ppcls", task="classification", profile=PROFILE, runtime=target("fp32").runtime,
                 models=[BuiltModel(case.source, arts, 0, "test")], outputs={"classifier": ["fetch_name_0"]},
                 metrics={})
    bundle = Bundle.open(out)           # verifies every listed file's size and sha256
    files = {f.path: f for f in bundle.manifest.files}
    for art in bundle.manifest.model("classifier").artifacts:
        assert art.path.endswith(".xml") and art.companions == [art.path[:-4] + ".bin"]
        assert art.companions[0] in files and (out / art.companions[0]).is_file()
        # the device backend loads the pair by name and answers like the FP32 reference
        backend = create_backend("openvino", out / art.path, bundle.manifest.runtime, artifact=art)
        got = backend.run(case.feed())[0]
        assert got.shape == (1, 4)
        # computing as the artifact was judged: bf16 for bf16 files and INT8 files with a bf16 float remainder
        assert backend.precision == ("bf16" if art.execution_precision == "bf16" and bf16_cpu() else "f32")
    # a damaged weights file is caught by the bundle check (`edge inspect` runs it)
    damaged = out / bundle.manifest.model("classifier").artifacts[0].companions[0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    problems = Bundle.open(out, verify=False).verify()
    assert any(damaged.name in p for p in problems), problems


def test_bf16_is_refused_on_a_cpu_without_bf16(cases, tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    cpuinfo.write_text(re.sub(r"\b(amx_bf16|avx512_bf16)\b", "", text))
    assert openvino_latency.host_bf16_flags(cpuinfo) == []
    monkeypatch.setattr(openvino_latency, "CPUINFO", cpuinfo)
    case = cases["classification"]
    result = builders.build(ArtifactChoice(format="openvino", precision="bf16"), case.fp32, case.ctx("bf16"))
    assert result.artifact is None
    assert result.reason.startswith("refused: bf16 execution needs a CPU with amx_bf16 or avx512_bf16")


def test_other_architectures_are_refused(cases):
    case = cases["classification"]
    result = builders.build(ArtifactChoice(format="openvino", precision="fp32"), case.fp32,
                            case.ctx("fp32", arch="aarch64"))
    assert result.artifact is None and "OpenVINO artifacts are built for CPU profiles of this host" in result.reason
