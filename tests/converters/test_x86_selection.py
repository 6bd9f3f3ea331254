"""Cross-format selection on x86, for real: PP-LCNet orientation converted with `--profile x86-amx` (OpenVINO
bf16 / INT8 / f32 and onnxruntime INT8 / FP32 candidates, timed side by side), then inspected and run.

The x86-amx convert uses 6 calibration inputs (instead of 16) for test time. Which candidate wins is a timing on a
shared machine (LCNet: onnxruntime INT8 and OpenVINO bf16 within 2% of each other in one run), so the tests check
the rules, not the winner. A second convert with an OpenVINO-only profile without fallback (bf16 or f32) ships
exactly one artifact, an OpenVINO one, which then runs through `edge infer`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from converters.pipeline import ConvertRequest, convert
from converters.selection import speed_score
from runtimes.bundle import Bundle

ROOT = Path(__file__).resolve().parents[2]
LCNET = "PP-LCNet/PPLCNet_x1_0_text_image_orientation"
CALIB = ["cls_img_rot0_demo.jpg", "ocr_1.jpg", "det_layout.jpg"]
VAL = ["cls_img_rot180_demo.jpg", "ocr_11.jpg", "ocr_en_img623.jpg"]
OPENVINO_ONLY = """\
name: test-x86-openvino-only
description: OpenVINO bf16 or f32, whichever is faster; no fallback (tests)
family: x86
arch: x86_64
accelerator: cpu
cpu_features: [avx512_bf16, amx_bf16]
threads: 0
artifacts:
  - format: openvino
    precision: bf16
  - format: openvino
    precision: fp32
runtime:
  openvino:
    PERFORMANCE_HINT: LATENCY
"""


def pictures(shared: Path, folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copyfile(shared / "images" / name, folder / name)
    return folder


def edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def folders(shared_dir: Path, tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("x86_selection")
    return {"work": work, "calib": pictures(shared_dir, work / "calib", CALIB),
            "val": pictures(shared_dir, work / "val", VAL), "model": shared_dir / "models" / LCNET}


@pytest.fixture(scope="module")
def amx_bundle(folders) -> Path:
    out = folders["work"] / "amx"
    convert(ConvertRequest(sources=[folders["model"]], profile="x86-amx", out=out, calib=folders["calib"],
                           val=folders["val"], options={"calib_limit": 6}))
    return out


def test_x86_amx_ships_the_fastest_candidate_and_the_onnx_fp32_fallback(amx_bundle):
    manifest = Bundle.open(amx_bundle).manifest
    entry = manifest.model("classifier")
    table = manifest.metrics["candidates"]["classifier"]
    assert [row["artifact"] for row in table] == ["openvino bf16", "openvino int8 (qdq-u8a-s8w)", "openvino fp32",
                                                  "onnx int8 (qdq-u8a-s8w)", "onnx fp32"]
    timed = [row for row in table if row["status"] != "refused"]
    chosen = [row for row in timed if row["status"] == "chosen"]
    assert len(chosen) == 1
    # the chosen one is the fastest over 1 thread and the profile's threads (geometric mean) of those timed
    threads = str(max(int(t) for t in chosen[0]["latency_ms"]))
    score = {row["artifact"]: speed_score({int(t): ms for t, ms in row["latency_ms"].items()}) for row in timed}
    assert score[chosen[0]["artifact"]] == min(score.values())
    assert score[chosen[0]["artifact"]] ** 2 == pytest.approx(chosen[0]["latency_ms"]["1"] *
                                                              chosen[0]["latency_ms"][threads])
    # shipped: the chosen one first, then the ONNX FP32 fallback (unless it won itself); nothing else
    shipped = [(a.format, a.precision) for a in entry.artifacts]
    assert shipped == list(dict.fromkeys([(chosen[0]["format"], chosen[0]["precision"]), ("onnx", "fp32")]))
    assert entry.selected == entry.artifacts[0].path and entry.decision.startswith(f"runs {chosen[0]['artifact']}")
    assert next(r for r in table if r["artifact"] == "onnx fp32")["status"] in {"fallback", "chosen"}
    for row in table:
        assert row["why"], row
        if row["status"] == "refused":
            assert "latency_ms" not in row and row["why"].startswith("refused"), row
        else:
            assert set(row["latency_ms"]) == {"1", threads} and row["ratio_vs_onnxruntime_fp32"], row
        if row["status"] == "not shipped":
            assert "not a fallback in the profile" in row["why"]
    # every shipped artifact carries the side-by-side keys, consistent with each other and with the table
    for art in entry.artifacts:
        row = next(r for r in table if (r["format"], r["precision"]) == (art.format, art.precision))
        for t in ("1", threads):
            assert art.metrics[f"latency_ms@{t}"] == row["latency_ms"][t]
            assert art.metrics[f"latency_ratio_vs_onnxruntime_fp32@{t}"] == pytest.approx(
                art.metrics[f"latency_ms@{t}"] / art.metrics[f"latency_ms_onnxruntime_fp32@{t}"], rel=1e-3)
    fp32 = next(a for a in entry.artifacts if (a.format, a.precision) == ("onnx", "fp32"))
    assert fp32.metrics["latency_ratio_vs_onnxruntime_fp32@1"] == 1.0      # the reference against itself
    assert Bundle.open(amx_bundle).verify() == []


def test_inspect_prints_the_candidate_table(amx_bundle):
    proc = edge("inspect", str(amx_bundle))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "candidates (ms at 1/2 thread(s) on the conversion host" in out
    manifest = Bundle.open(amx_bundle).manifest
    for row in manifest.metrics["candidates"]["classifier"]:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(row["artifact"] + " "))
        assert row["status"] in line
        if "latency_ms" in row:
            assert f"{row['latency_ms']['1']:.2f}/" in line and "x" in line


@pytest.fixture(scope="module")
def openvino_bundle(folders) -> Path:
    profile = folders["work"] / "openvino-only.yaml"
    profile.write_text(OPENVINO_ONLY, encoding="utf-8")
    out = folders["work"] / "openvino-only"
    convert(ConvertRequest(sources=[folders["model"]], profile=profile, out=out, calib=folders["calib"],
                           val=folders["val"]))
    return out


def test_without_a_fallback_only_the_chosen_artifact_ships(openvino_bundle):
    manifest = Bundle.open(openvino_bundle).manifest
    table = manifest.metrics["candidates"]["classifier"]
    assert sorted(row["status"] for row in table) == ["chosen", "not shipped"], table
    chosen = next(row for row in table if row["status"] == "chosen")
    entry = manifest.model("classifier")
    assert [(a.format, a.precision) for a in entry.artifacts] == [("openvino", chosen["precision"])]
    assert entry.artifacts[0].companions == [entry.artifacts[0].path[:-4] + ".bin"]


def test_a_bundle_that_ships_openvino_runs_through_edge_infer(openvino_bundle, amx_bundle, folders):
    picture = folders["val"] / "cls_img_rot180_demo.jpg"
    state = str(folders["work"] / "state")
    proc = edge("infer", str(openvino_bundle), str(picture), "--json", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    assert "runs on OpenVINO" in proc.stderr            # the backend's log line: the IR really ran
    labels = [r["label"] for r in json.loads(proc.stdout.splitlines()[0])["results"]]
    assert labels
    # the same answer as the x86-amx bundle's ONNX FP32 fallback gives, in onnxruntime
    fallback = edge("infer", str(amx_bundle), str(picture), "--json", "--precision", "fp32", "--state-dir", state)
    assert fallback.returncode == 0, fallback.stderr
    if Bundle.open(amx_bundle).manifest.model("classifier").artifacts[0].format != "openvino":
        assert "runs on OpenVINO" not in fallback.stderr
    assert [r["label"] for r in json.loads(fallback.stdout.splitlines()[0])["results"]] == labels
