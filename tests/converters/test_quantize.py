"""Optimize and quantize passes on the real PP-OCRv4 models and real images.

The FP32 models are made here from the shared PP-OCR exports with the converter's own first passes
(paddle2onnx, repair), so the optimize pass sees the graph a conversion gives it; images come from
the shared folder. Both skip when ../shared is absent. No timing is asserted: the quantize pass
measures latency itself, and the tests check that its decision honours what it recorded
(accepted: metric within budget and faster; refused: the FP32 file comes back unchanged).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from converters.calibration import collect_stats
from converters.families import family_for
from converters.latency import compare, session
from converters.passes.base import ModelFile, PassContext, Target
from converters.passes.channel_groups import plan
from converters.passes.optimize import OptimizePass, output_drift
from converters.passes.paddle_to_onnx import PaddleToOnnxPass
from converters.passes.quantize import QuantizePass, int8_form
from converters.passes.repair import RepairPass
from converters.sources import load_source
from runtimes.errors import ConversionError

OCR_EXPORTS = ("ch_PP-OCRv4_det", "ch_ppocr_mobile_v2_cls", "ch_PP-OCRv4_rec")
OCR_IMAGES = ("ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg", "ocr_word_ch_1.jpg", "det_layout.jpg",
              "cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg")


@pytest.fixture(scope="module")
def ocr(shared_dir: Path, tmp_path_factory):
    """(family, FP32 ONNX path per role (exported and repaired, not optimised), images)."""
    work = tmp_path_factory.mktemp("fp32")
    target = Target(profile="test", arch="x86_64", accelerator="cpu", format="onnx", precision="fp32")
    specs, fp32 = {}, {}
    for name in OCR_EXPORTS:
        source = load_source(shared_dir / "models" / "PP-OCR" / name)
        role = source.spec.role
        ctx = PassContext(work, target, role, options={"source": source, "params_file": source.params_file})
        model = ModelFile(source.model_file, source.format)
        for step in (PaddleToOnnxPass(), RepairPass()):
            model = step.run(model, ctx)
        specs[role], fp32[role] = source.spec, model.path
    images = [shared_dir / "images" / name for name in OCR_IMAGES]
    return family_for("ocr", specs), fp32, images


def context(tmp: Path, role: str, ocr, **extra) -> PassContext:
    family, fp32, images = ocr
    target = Target(profile="test", arch="x86_64", accelerator="cpu", format="onnx", precision="int8",
                    quantization="qdq-u8a-s8w")
    # judged on pictures it was not calibrated on, as the converter does (converters/pictures.py)
    options = {"family": family, "fp32_models": fp32, "calib_images": images[0::2], "val_images": images[1::2],
               "threads": 2, **extra}
    return PassContext(tmp, target, role, options=options)


@pytest.fixture(scope="module")
def optimised_det(ocr, tmp_path_factory) -> ModelFile:
    _, fp32, _ = ocr
    ctx = context(tmp_path_factory.mktemp("opt"), "det", ocr)
    return OptimizePass().run(ModelFile(fp32["det"], "onnx"), ctx)


def test_optimize_folds_the_float_side_work_and_keeps_outputs(ocr, optimised_det):
    family, fp32, images = ocr
    before = Counter(n.op_type for n in onnx.load(str(fp32["det"])).graph.node)
    optimised = onnx.load(str(optimised_det.path))
    after = Counter(n.op_type for n in optimised.graph.node)
    notes = optimised_det.notes["optimize"]
    # PP-LCNetV3's learnable-affine Mul/Add pairs were folded into the convolutions: far fewer
    # elementwise nodes, the same convolutions, and the profile's opset (13) kept.
    assert notes["fusions"]["conv_output_fold"] > 0 and notes["fusions"]["affine_into_next_conv"] > 0
    assert after["Mul"] + after["Add"] < (before["Mul"] + before["Add"]) / 2
    assert after["Conv"] == before["Conv"] and notes["opset"] == 13
    assert "fallback" not in notes and notes["parity_inputs"].endswith("real inputs")
    # Same outputs on pages the pass did not use for its own check (evaluation views).
    feeds = family.latency_feeds("det", fp32, images, 3)
    assert output_drift(fp32["det"], optimised_det.path, feeds) < 1e-3


def test_optimize_fuses_hardswish_when_the_opset_allows(ocr, tmp_path):
    family, fp32, images = ocr
    result = OptimizePass().run(ModelFile(fp32["cls"], "onnx"), context(tmp_path, "cls", ocr, max_opset=14))
    ops = Counter(n.op_type for n in onnx.load(str(result.path)).graph.node)
    # ppocr cls (MobileNetV3) writes hard-swish as Mul(x, HardSigmoid(x)): each became one HardSwish
    assert ops["HardSwish"] == result.notes["optimize"]["fusions"]["hardswish"] > 0
    assert result.notes["optimize"]["opset"] == 14
    feeds = family.latency_feeds("cls", fp32, images, 2)
    assert output_drift(fp32["cls"], result.path, feeds) < 1e-3


def test_int8_form_is_exact_and_leaves_no_hardswish(ocr, optimised_det, tmp_path):
    family, fp32, images = ocr
    out = tmp_path / "det.int8form.onnx"
    counts = int8_form(optimised_det.path, out)
    ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert counts["hardswish"] > 0 and ops["HardSwish"] == 0 and ops["HardSigmoid"] == 0
    feeds = family.latency_feeds("det", fp32, images, 2)
    assert output_drift(optimised_det.path, out, feeds) < 1e-3


def test_calibration_ranges_bracket_the_inputs(ocr, optimised_det, tmp_path):
    family, fp32, images = ocr
    feeds = family.calibration_feeds("det", fp32, images, 3)
    stats = collect_stats(optimised_det.path, feeds, tmp_path, threads=1)
    name = session(optimised_det.path, 1).get_inputs()[0].name
    lo, hi = stats[name].range("minmax")
    assert lo == pytest.approx(min(float(f[name].min()) for f in feeds))
    assert hi == pytest.approx(max(float(f[name].max()) for f in feeds))
    # percentiles: the k-th largest / smallest of all inputs' values pooled, k = ceil(tail * count)
    pooled = np.sort(np.concatenate([f[name].ravel() for f in feeds]))
    for method, tail in (("p99.999", 1e-5), ("p99.99", 1e-4)):
        k = int(np.ceil(tail * pooled.size))
        assert stats[name].range(method) == pytest.approx((pooled[k - 1], pooled[-k]))
        assert lo <= pooled[k - 1] <= pooled[-k] <= hi
    with pytest.raises(ConversionError, match="only 1e-05 was kept"):
        collect_stats(optimised_det.path, feeds[:1], tmp_path, tail=1e-5, threads=1)[name].range("p99.99")
    assert len(stats) > 100            # every float activation of the graph, not just the ends


def check_decision(result: ModelFile, optimised: ModelFile, ctx: PassContext) -> dict:
    q = result.notes["quantize"]
    value_within = q["value"] <= q["budget"] if q["budget_is"] == "max" else q["value"] >= q["budget"]
    within = q["within_budget"]         # the family may check more than the value (OCR det: page text too)
    assert value_within or not within
    assert q["samples"] > 0 and q["calibration"]["inputs"] > 0
    if q["accepted"]:
        assert within, q["reason"]
        assert q["latency_ratio"] < 1.0 and q["latency_ratio_1thread"] < 1.0, q["reason"]
        assert result.precision == "int8" and result.path != optimised.path
        ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        # The recorded metric is what the family measures on the shipped file.
        again = ctx.options["family"].evaluate(ctx.role, ctx.options["fp32_models"], result.path,
                                               ctx.options["val_images"])
        assert again.value == pytest.approx(q["value"], abs=1e-6)
    else:
        assert result.path == optimised.path and result.precision == "fp32"
        slower = q.get("latency_ratio", 0.0) >= 1.0 or q.get("latency_ratio_1thread", 0.0) >= 1.0
        assert slower or not within, q["reason"]
    return q


def test_quantize_det_honours_its_budget(ocr, optimised_det, tmp_path):
    ctx = context(tmp_path, "det", ocr)
    q = check_decision(QuantizePass().run(optimised_det, ctx), optimised_det, ctx)
    assert q["metric"].startswith("box_f1") and q["budget"] == 0.99
    assert {c["method"] for c in q["candidates"]} >= {"minmax", "p99.999", "p99.99"}


def test_quantize_cls_honours_its_budget(ocr, tmp_path):
    _, fp32, _ = ocr
    ctx = context(tmp_path, "cls", ocr)
    optimised = OptimizePass().run(ModelFile(fp32["cls"], "onnx"), ctx)
    q = check_decision(QuantizePass().run(optimised, ctx), optimised, ctx)
    assert q["metric"].startswith("top1") and "latency_ms" in q


def test_latency_compare_reports_every_model(ocr):
    family, fp32, images = ocr
    feeds = family.latency_feeds("cls", fp32, images, 2)
    lat = compare({"a": fp32["cls"], "b": fp32["cls"]}, feeds, threads=1, rounds=2)
    assert set(lat.median_ms) == {"a", "b"} and lat.runs == 2 * len(feeds)
    assert all(np.isfinite(v) and v > 0 for v in lat.median_ms.values())


def test_channel_group_plan_ignores_axes_that_are_not_channels(ocr, tmp_path):
    """rec inputs of different widths (long lines are padded wider): tensors whose axis 1 is a width after
    a transpose are not channels; their 'peaks' would not even have one shape (make demo hit this)."""
    family, fp32, images = ocr
    feed = family.calibration_feeds("rec", fp32, images, 1)[0]
    name = next(iter(feed))
    wider = {name: np.pad(feed[name], ((0, 0), (0, 0), (0, 0), (0, feed[name].shape[3])))}
    ranked, peaks = plan(fp32["rec"], [feed, wider], tmp_path)
    assert peaks and all(p.ndim == 1 and p.size > 0 for p in peaks.values())
    assert set(ranked) <= {n.name for n in onnx.load(str(fp32["rec"])).graph.node}
