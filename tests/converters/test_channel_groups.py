"""Channel groups on the real PicoDet layout model (PP-LCNet backbone) and real document pictures.

The FP32 graph is made with the converter's own passes from the shared Paddle export. The split must
be exact in float, and must be what rescues INT8: the same calibration with the worst blocks split
gives boxes closer to FP32 than without (box F1 vs FP32, the detection family's own metric).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from converters.calibration import RANGE_METHODS, TensorStats, collect_stats, write_range_cache
from converters.families import family_for
from converters.passes.base import ModelFile, PassContext, Target
from converters.passes.channel_groups import MAX_GROUPS, groups_by_range, plan
from converters.passes.optimize import OptimizePass, output_drift
from converters.passes.paddle_to_onnx import PaddleToOnnxPass
from converters.passes.quantize import build_int8, int8_form
from converters.passes.repair import RepairPass
from converters.sources import load_source

EXPORT = "PP-PicoDet/picodet_lcnet_layout_cdla"
PICTURES = ("det_layout.jpg", "ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg")


def test_groups_put_narrow_channels_apart_and_dead_ones_with_the_widest():
    peaks = np.array([10.0, 0.5, 9.0, 0.0, 1.0, 2.0])
    # live span 10 / 0.6 (5th percentile) needs 2 groups of equal ratio: the cut is at 10 * 0.06 ** 0.5
    assert groups_by_range(peaks) == [[0, 2, 3], [1, 4, 5]]
    assert groups_by_range(np.array([4.0, 3.0, 1.0])) == [[0, 1, 2]]        # within SPREAD: one group
    wide = np.geomspace(1000.0, 0.001, 60)                                   # 10^6: more than MAX_GROUPS needed
    groups = groups_by_range(wide)
    assert len(groups) == MAX_GROUPS and sorted(sum(groups, [])) == list(range(60))
    assert all(max(wide[g]) > min(wide[g]) for g in groups) and groups[0][0] == 0


@pytest.fixture(scope="module")
def layout(shared_dir: Path, tmp_path_factory):
    """(family, FP32 optimised model path, pictures), made by the converter's own FP32 passes."""
    work = tmp_path_factory.mktemp("layout")
    source = load_source(shared_dir / "models" / EXPORT)
    family = family_for("detection", {"detector": source.spec})
    pictures = [shared_dir / "images" / name for name in PICTURES]
    target = Target(profile="test", arch="x86_64", accelerator="cpu", format="onnx", precision="fp32")
    ctx = PassContext(work, target, "detector", options={"source": source, "params_file": source.params_file})
    model = ModelFile(source.model_file, source.format)
    for step in (PaddleToOnnxPass(), RepairPass()):
        model = step.run(model, ctx)
    ctx.options.update(family=family, fp32_models={"detector": model.path}, val_images=pictures)
    model = OptimizePass().run(model, ctx)
    return family, model.path, pictures


def test_split_is_exact_and_int8_with_it_is_closer_to_fp32(layout, tmp_path):
    family, fp32, pictures = layout
    fp32_models = {"detector": fp32}
    feeds = family.calibration_feeds("detector", fp32_models, pictures, 16)
    ranked, peaks = plan(fp32, feeds, tmp_path)
    assert len(ranked) >= 4

    f1 = {}
    for blocks in (0, 4):
        form = tmp_path / f"form{blocks}.onnx"
        counts = int8_form(fp32, form, ranked[:blocks], peaks)
        assert counts.get("channel_groups", 0) == blocks
        concats = Counter(n.op_type for n in onnx.load(str(form)).graph.node)["Concat"]
        if blocks:
            assert concats >= blocks
        # exact in float on the pictures as a device sees them
        assert output_drift(fp32, form, family.latency_feeds("detector", fp32_models, pictures, 2)) < 1e-4
        cache = write_range_cache(collect_stats(form, feeds, tmp_path), "p99.999", tmp_path / f"r{blocks}.json")
        int8 = build_int8(form, tmp_path / f"int8.{blocks}.onnx", cache, "qdq-u8a-s8w", [])
        verdict = family.evaluate("detector", fp32_models, int8, pictures)
        assert verdict.samples >= 10
        f1[blocks] = verdict.value
    assert f1[4] >= 0.95 and f1[4] > f1[0], f1        # measured here: 0.78 without, 1.0 with


def test_ranges_of_the_split_graph_reuse_the_unsplit_ones_that_did_not_change(layout, tmp_path):
    """collect_stats(known=...) takes a tensor's ranges from the unsplit graph only where its values are
    the same, and gives the same ranges as measuring everything again."""
    family, fp32, pictures = layout
    feeds = family.calibration_feeds("detector", {"detector": fp32}, pictures, 4)
    ranked, peaks = plan(fp32, feeds, tmp_path)
    int8_form(fp32, tmp_path / "form0.onnx", [], peaks)
    int8_form(fp32, tmp_path / "form2.onnx", ranked[:2], peaks)
    base = collect_stats(tmp_path / "form0.onnx", feeds, tmp_path)
    full = collect_stats(tmp_path / "form2.onnx", feeds, tmp_path)
    reused = collect_stats(tmp_path / "form2.onnx", feeds, tmp_path, known=base)
    taken = [name for name in reused if reused[name] is base.get(name)]
    assert set(reused) == set(full) and len(full) - len(taken) >= 2 and len(taken) > 0.8 * len(full)
    for name in full:
        for method in RANGE_METHODS:
            assert np.allclose(full[name].range(method), reused[name].range(method), rtol=1e-4, atol=1e-5), name
    # recorded extremes that no longer hold (a name given other values) are measured again
    victim = taken[0]
    wrong = TensorStats(size=base[victim].size, mins=base[victim].mins, maxs=[2 * m + 1 for m in base[victim].maxs],
                        tops=base[victim].tops, bottoms=base[victim].bottoms)
    again = collect_stats(tmp_path / "form2.onnx", feeds, tmp_path, known={**base, victim: wrong})
    assert again[victim] is not wrong and again[victim].range("minmax") == full[victim].range("minmax")
