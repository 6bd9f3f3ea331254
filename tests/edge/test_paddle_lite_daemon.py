"""The daemon running a bundle whose selected artifact is an x86 Paddle Lite `.nb`: real pictures in a
watched folder, results over a real mosquitto; then its Paddle Lite worker is killed with SIGKILL while
pictures are being processed: that frame becomes an error message, the daemon keeps running, and later
frames' results arrive from a restarted worker."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import jsonschema

from edge.daemon import contract
from runtimes.bundle import Artifact, Bundle, Manifest, describe_file, write_manifest

from ..conftest import convert_bundle, write_fp32_profile
from ..paddle_lite_support import (IMAGES, LCNET, REPO_ROOT, make_x86_nb, needs_lcnet,  # noqa: F401
                                   paddle_lite_cache, paddle_lite_root)

DEVICE = "pi-test"
DEMOS = {"cls_img_rot0_demo.jpg": "0", "cls_img_rot180_demo.jpg": "180"}


def lcnet_nb_bundle(work: Path) -> Path:
    """PP-LCNet orientation as a bundle whose selected artifact is an x86 `.nb` (EDGE_CACHE_DIR must hold the
    paddle-lite toolchain). Made in two real steps while `edge convert` cannot build `.nb` files: the real
    convert with the FP32-only test profile, then the real opt's x86 `.nb` of the same legacy program added
    to the manifest and selected. The lead switches this helper to the real convert (a profile entry
    `format: paddle_lite, precision: fp32` with `paddle_lite: {valid_targets: [x86]}`) when that builder lands."""
    calib = work / "calib"
    calib.mkdir(parents=True)
    for name in DEMOS:
        shutil.copy(IMAGES / name, calib / name)
    out = convert_bundle(work / "bundle", [LCNET], write_fp32_profile(work), calib)
    make_x86_nb(LCNET, out / "classifier.x86")
    manifest = Manifest.model_validate_json((out / "manifest.json").read_text(encoding="utf-8"))
    entry = manifest.model("classifier")
    nb = Artifact(**describe_file(out, "classifier.x86.nb"), format="paddle_lite", precision="fp32", target="x86_64")
    entry.artifacts.insert(0, nb)
    entry.selected, entry.decision = nb.path, "x86 .nb made by Paddle Lite's opt (test bundle)"
    write_manifest(out, manifest)
    return out


def worker_pids(daemon_pid: int) -> list[int]:
    """Children of the daemon that run the Paddle Lite worker script (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue                                            # the process ended while we looked
        if parent == daemon_pid and b"paddle_lite_worker.py" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def copy_pictures(folder: Path, prefix: str, count: int) -> list[str]:
    pictures = sorted(p for p in IMAGES.iterdir() if p.suffix in (".jpg", ".png"))
    names = []
    for index in range(count):
        source = pictures[index % len(pictures)]
        names.append(f"{prefix}_{index:02d}{source.suffix}")
        shutil.copy(source, folder / f".{names[-1]}")
        os.replace(folder / f".{names[-1]}", folder / names[-1])   # whole files only: the daemon may be reading
    return names


def validator(schema_id: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((REPO_ROOT / contract.SCHEMA_FILES[schema_id]).read_text()))


@needs_lcnet
def test_nb_bundle_through_the_daemon_survives_a_killed_worker(paddle_lite_cache, tmp_path, mqtt_broker,
                                                               mqtt_subscriber, edge_daemon):
    bundle = lcnet_nb_bundle(tmp_path / "work")
    assert Bundle.open(bundle).manifest.model("classifier").selected_artifact().format == "paddle_lite"
    pipeline = json.loads((bundle / "manifest.json").read_text())["pipeline"]
    results, errors = contract.results_topic(DEVICE, pipeline), contract.errors_topic(DEVICE, pipeline)
    by_source = lambda m: Path(m.json()["source"]).name             # noqa: E731  (QoS 1 may deliver twice)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in DEMOS:
        shutil.copy(IMAGES / name, folder / name)
    sub = mqtt_subscriber(mqtt_broker, [f"edge/{DEVICE}/#"])
    daemon = edge_daemon([str(bundle), "--source", str(folder), "--mqtt", mqtt_broker.url, "--device-id", DEVICE,
                          "--poll-interval", "0.2", "--state-dir", str(tmp_path / "state")])

    first = {by_source(m): m.json() for m in sub.wait_for(results, len(DEMOS), timeout=60, distinct=by_source)}
    for name, label in DEMOS.items():                             # the .nb really classifies
        validator(contract.RESULT_SCHEMA).validate(first[name])
        assert first[name]["results"][0]["label"] == label, first[name]
    [worker] = worker_pids(daemon.process.pid)

    busy = copy_pictures(folder, "busy", 12)
    sub.wait_for(results, len(DEMOS) + 1, timeout=60, distinct=by_source)
    os.kill(worker, signal.SIGKILL)                               # while the busy pictures are being run
    busy += copy_pictures(folder, "more", 2)                      # so a frame always comes after the kill
    [error] = [m.json() for m in sub.wait_for(errors, 1, timeout=60)]
    validator(contract.ERROR_SCHEMA).validate(error)
    assert "Paddle Lite" in error["error"] and "SIGKILL" in error["error"], error
    assert error["source"].endswith(tuple(busy))
    others = len(DEMOS) + len(busy) - 1
    sub.wait_for(results, others, timeout=120, distinct=by_source)

    later = copy_pictures(folder, "later", 2)
    got = {by_source(m) for m in sub.wait_for(results, others + len(later), timeout=60, distinct=by_source)}
    assert set(later) <= got and Path(error["source"]).name not in got
    assert daemon.process.poll() is None
    assert worker_pids(daemon.process.pid) not in ([], [worker])   # a new worker runs the frames
    daemon.wait_log(r"worker restarting \(restart 1\)")
    assert len(sub.on(errors)) == 1 and "Traceback" not in daemon.log
    assert daemon.terminate() == 0
