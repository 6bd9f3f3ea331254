"""`edge bench` on a real x86 bundle (PP-LCNet orientation: ONNX INT8 and FP32 from the real `edge convert
--profile x86-vnni --calib`, and an x86 Paddle Lite `.nb` made by the toolchain's real `opt`): every artifact
run in the real pipeline on the bundle's sample pictures, the record written to the state folder, then used by
`edge infer` and by a daemon publishing to a real mosquitto. No timing is asserted: only that the choice is
consistent with the record's own numbers."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.daemon import contract
from edge.device import agreement
from edge.device.context import device_context
from edge.device.record import BenchRecord, read_record, record_path
from runtimes.bundle import Artifact, Bundle, Manifest, describe_file, sha256_of, write_manifest
from runtimes.tasks import load_task

from ..conftest import convert_bundle
from ..paddle_lite_support import (IMAGES, LCNET, REPO_ROOT, make_x86_nb, needs_lcnet,  # noqa: F401
                                   paddle_lite_cache, paddle_lite_root)

DEVICE = "bench-test"
CALIBRATION = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "ocr_1.jpg", "ocr_11.jpg")
DEMOS = {"cls_img_rot0_demo.jpg": "0", "cls_img_rot180_demo.jpg": "180"}
pytestmark = needs_lcnet


def edge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real `edge` CLI in a child process, with this test's environment (EDGE_CACHE_DIR)."""
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def bundle_dir(paddle_lite_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONNX INT8 + FP32 by the real x86-vnni convert; the x86 `.nb` of the same Paddle program added after them
    (the Paddle Lite builder makes `.nb` files for ARM profiles only)."""
    work = tmp_path_factory.mktemp("bench_bundle")
    calib = work / "calib"
    calib.mkdir()
    for name in CALIBRATION:
        shutil.copy(IMAGES / name, calib / name)
    out = convert_bundle(work / "lcnet", [LCNET], "x86-vnni", calib)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_CACHE_DIR", str(paddle_lite_root))
        make_x86_nb(LCNET, out / "classifier.x86")
    manifest = Manifest.model_validate_json((out / "manifest.json").read_text(encoding="utf-8"))
    manifest.model("classifier").artifacts.append(
        Artifact(**describe_file(out, "classifier.x86.nb"), format="paddle_lite", precision="fp32", target="x86_64"))
    write_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def benched(bundle_dir: Path, paddle_lite_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real `edge bench` run: its output, the state folder and the report folder."""
    state, out = tmp_path_factory.mktemp("bench_state"), tmp_path_factory.mktemp("bench_out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_CACHE_DIR", str(paddle_lite_root))
        patch.delenv("EDGE_PADDLE_LITE_PYTHON", raising=False)
        proc = edge("bench", str(bundle_dir), "--frames", "6", "--threads", "1", "--state-dir", str(state),
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"proc": proc, "state": state, "out": out}


def test_bundle_ships_sample_pictures_of_its_judging_set(bundle_dir):
    bundle = Bundle.open(bundle_dir)                     # verify() hashes the samples too
    manifest = bundle.manifest
    judged = set(manifest.metrics["pictures"]["validation"])
    assert manifest.samples and {Path(s.path).name for s in manifest.samples} <= judged
    for sample in manifest.samples:
        assert sample.path.startswith("samples/") and cv2.imread(str(bundle.path_of(sample.path))) is not None
    assert [a.precision for a in manifest.model("classifier").artifacts] == ["int8", "fp32", "fp32"]

    raw = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    del raw["samples"]                                   # a bundle made before samples were shipped
    old = bundle_dir.parent / "old_bundle"
    shutil.copytree(bundle_dir, old, dirs_exist_ok=True)
    (old / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    assert Bundle.open(old).manifest.samples == []
    proc = edge("bench", str(old), "--state-dir", str(old.parent / "state_old"))
    assert proc.returncode == 2 and "no sample pictures" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_records_the_fastest_artifact_that_passed(bundle_dir, benched):
    proc, state, out = benched["proc"], benched["state"], benched["out"]
    bundle = Bundle.open(bundle_dir)
    path = record_path(bundle, state)
    assert path.name.startswith("ppcls-") and path.is_file()
    record = BenchRecord.model_validate_json(path.read_text(encoding="utf-8"))
    assert record.manifest_sha256 == sha256_of(bundle_dir / "manifest.json")
    assert record.samples == [Path(s.path).name for s in bundle.manifest.samples] and record.frames == 6

    [choice] = record.roles
    by_path = {m.artifact: m for m in choice.measurements}
    assert set(by_path) == {"classifier.int8.onnx", "classifier.fp32.onnx", "classifier.x86.nb"}
    assert all(m.error is None for m in by_path.values()), by_path
    assert by_path["classifier.fp32.onnx"].reference and by_path["classifier.fp32.onnx"].passed
    for name in ("classifier.int8.onnx", "classifier.x86.nb"):
        m = by_path[name]
        assert m.metric == "top1_agreement vs fp32" and m.samples == len(record.samples), m
        assert m.runs_with == {"classifier": name}
    assert by_path["classifier.x86.nb"].value == 1.0 and by_path["classifier.x86.nb"].passed   # FP32 both
    for m in by_path.values():
        assert 0 < m.p50_ms <= m.p95_ms and m.fps > 0 and m.peak_rss_mb > 0, m
    # the Paddle Lite worker process is counted in the .nb's peak
    assert by_path["classifier.x86.nb"].peak_rss_mb > by_path["classifier.fp32.onnx"].peak_rss_mb

    chosen = by_path[choice.chosen]
    assert chosen.passed
    assert chosen.p50_ms == min(m.p50_ms for m in by_path.values() if m.passed)
    assert choice.default == "classifier.int8.onnx"                   # the bundle's selected artifact loads here
    assert choice.chosen in choice.reason and "fastest that passed" in choice.reason

    md = (out / "bench.md").read_text(encoding="utf-8")
    for name in by_path:
        assert f"| {name} |" in md
    assert f"runs `{choice.chosen}`" in md and "![latency per artifact](bench.png)" in md
    png = cv2.imread(str(out / "bench.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 300
    assert "| classifier | " in proc.stdout and f"classifier: runs {choice.chosen}" in proc.stdout
    assert "round 2/2" in proc.stderr and "frame 6/6" not in proc.stderr and "frame 3/3" in proc.stderr

    shown = edge("inspect", str(bundle_dir), "--state-dir", str(state))
    assert shown.returncode == 0 and f"chosen on this device: {choice.chosen}: " in shown.stdout, shown.stdout


def test_edge_infer_runs_what_the_record_chose(bundle_dir, benched, paddle_lite_cache, tmp_path):
    record = read_record(Bundle.open(bundle_dir), benched["state"])
    chosen = record.roles[0].chosen
    picture = str(IMAGES / "cls_img_rot180_demo.jpg")
    proc = edge("infer", str(bundle_dir), picture, "--json", "--state-dir", str(benched["state"]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["label"] == "180"
    assert "runs the artifacts edge bench chose" in proc.stderr and f"classifier {chosen}" in proc.stderr

    # A record that chose the .nb (as a device where Paddle Lite is fastest would) is obeyed too.
    other = tmp_path / "state"
    nb_record = record.model_copy(deep=True)
    nb_record.roles[0].chosen = "classifier.x86.nb"
    target = record_path(Bundle.open(bundle_dir), other)
    target.parent.mkdir(parents=True)
    target.write_text(nb_record.model_dump_json(), encoding="utf-8")
    proc = edge("infer", str(bundle_dir), picture, "--json", "--state-dir", str(other))
    assert proc.returncode == 0 and json.loads(proc.stdout)["results"][0]["label"] == "180", proc.stderr
    assert "runs classifier.x86.nb in worker" in proc.stderr, proc.stderr
    # --precision names the artifacts itself: the record is not applied
    proc = edge("infer", str(bundle_dir), picture, "--precision", "fp32", "--state-dir", str(other))
    assert proc.returncode == 0 and "edge bench chose" not in proc.stderr and "x86.nb" not in proc.stderr


def test_a_changed_bundle_does_not_reuse_the_old_choice(bundle_dir, benched, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(bundle_dir, changed)
    manifest = Manifest.model_validate_json((changed / "manifest.json").read_text(encoding="utf-8"))
    manifest.model("classifier").selected = "classifier.fp32.onnx"
    write_manifest(changed, manifest)
    bundle = Bundle.open(changed)
    assert read_record(bundle, benched["state"]) is None
    context = device_context(bundle, benched["state"])
    assert context.prefer == {} and context.state_dir == benched["state"]
    task = load_task(bundle, context)
    assert task.runners()["classifier"].artifact.path == "classifier.fp32.onnx"


def test_a_missing_backend_is_skipped_with_its_reason(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "no-toolchains"))      # no Paddle Lite anywhere
    monkeypatch.delenv("EDGE_PADDLE_LITE_PYTHON", raising=False)
    proc = edge("bench", str(bundle_dir), "--frames", "2", "--threads", "1", "--state-dir", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = read_record(Bundle.open(bundle_dir), tmp_path / "s")
    skipped = next(m for m in record.roles[0].measurements if m.artifact == "classifier.x86.nb")
    assert skipped.error.startswith("not loadable here: its runtime (Paddle Lite) is not installed here")
    assert record.roles[0].chosen != "classifier.x86.nb"
    assert "classifier.x86.nb: not loadable here" in proc.stdout + proc.stderr


def test_daemon_runs_the_chosen_artifact_and_says_why(bundle_dir, benched, paddle_lite_cache, tmp_path,
                                                      mqtt_broker, mqtt_subscriber, edge_daemon):
    record = read_record(Bundle.open(bundle_dir), benched["state"])
    chosen = record.roles[0].chosen
    folder = tmp_path / "in"
    folder.mkdir()
    for name in DEMOS:
        shutil.copy(IMAGES / name, folder / name)
    results = contract.results_topic(DEVICE, "ppcls")
    sub = mqtt_subscriber(mqtt_broker, [f"edge/{DEVICE}/#"])
    daemon = edge_daemon([str(bundle_dir), "--source", str(folder), "--mqtt", mqtt_broker.url, "--device-id", DEVICE,
                          "--poll-interval", "0.2", "--state-dir", str(benched["state"])])
    by_source = lambda m: Path(m.json()["source"]).name             # noqa: E731  (QoS 1 may deliver twice)
    got = {by_source(m): m.json() for m in sub.wait_for(results, len(DEMOS), timeout=60, distinct=by_source)}
    schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[contract.RESULT_SCHEMA]).read_text(encoding="utf-8"))
    for name, label in DEMOS.items():
        jsonschema.Draft202012Validator(schema).validate(got[name])
        assert got[name]["results"][0]["label"] == label
    daemon.wait_log(rf"runs the artifacts edge bench chose .*classifier {chosen.replace('.', '[.]')}")

    info = mqtt_broker.retained(contract.status_info_topic(DEVICE)).json()
    [pipeline] = info["pipelines"]
    assert [run["artifact"] for run in pipeline["runs"]] == [chosen]
    assert pipeline["chosen"]["by"] == "edge bench" and pipeline["chosen"]["artifacts"] == {"classifier": chosen}
    assert record.created in pipeline["chosen"]["why"] and "fastest that passed" in pipeline["chosen"]["why"]
    status_schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[contract.STATUS_SCHEMA]).read_text())
    jsonschema.Draft202012Validator(status_schema).validate(info)
    assert daemon.terminate() == 0 and "Traceback" not in daemon.log


# --- the device-side metrics keep the converter's budgets and agree with its measures ----------------

def test_budgets_are_the_converters():
    from converters.families import classification, detection, keypoints, ocr, segmentation

    assert agreement.DETECTION_BOX_F1 == detection.BUDGET
    assert agreement.CLASSIFICATION_TOP1 == classification.BUDGET
    assert agreement.SEGMENTATION_MASK_IOU == segmentation.BUDGET
    assert (agreement.KEYPOINTS_PCK, agreement.PCK_ALPHA) == (keypoints.BUDGET, keypoints.ALPHA)
    assert (agreement.OCR_DET_BOX_F1, agreement.OCR_TEXT_CER) == (ocr.BUDGETS["det"], ocr.BUDGETS["rec"])


def test_device_measures_equal_the_converters():
    from converters import metrics

    rng = np.random.default_rng(7)
    for _ in range(200):
        rects = [cv2.boxPoints(((rng.uniform(40, 60), rng.uniform(40, 60)), (rng.uniform(5, 60), rng.uniform(5, 30)),
                                rng.uniform(-30, 30))) for _ in range(2)]
        assert agreement.quad_iou(*rects) == pytest.approx(metrics.box_iou(*rects), abs=1e-4)
        xs, ys = (np.sort(rng.uniform(0, 50, (2, 2)), axis=1) for _ in range(2))
        a, b = [xs[0][0], ys[0][0], xs[0][1], ys[0][1]], [xs[1][0], ys[1][0], xs[1][1], ys[1][1]]
        assert agreement.rect_iou(a, b) == pytest.approx(metrics.box_iou(a, b), abs=1e-9)
    for got, ref in (("kitten", "sitting"), ("", "abc"), ("数据中心", "数据申心"), ("same", "same")):
        assert agreement.edit_distance(got, ref) == metrics.edit_distance(got, ref)
        assert agreement.text_cer(got, ref) == pytest.approx(metrics.cer([got], [ref]))
