"""OTA over MQTT with A/B slots, on real daemons and a real mosquitto: a good update switches and stays, a bad
one (loads, fails on every frame) rolls itself back, a package signed by a key the device does not trust is
refused after delivery, a group rollout stops at a failed canary, and a `kill -9` at every step of an update
leaves a device whose `current` slot runs."""
from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import pytest

from edge.broker import Lockdown
from edge.daemon import contract
from edge.daemon.config import BrokerConfig
from edge.ota.operator import Offer, Operator

from ..conftest import Broker

from .ota_support import Device, make_packages, seg_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]
OTA_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((REPO_ROOT / contract.SCHEMA_FILES[contract.OTA_SCHEMA]).read_text()),
    format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def packages(shared_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("ota")
    return make_packages(seg_bundle(shared_dir, work), work)


@pytest.fixture
def device(packages, mqtt_broker, shared_dir, tmp_path):
    made = []

    def make(device_id: str = "cam-1", **options) -> Device:
        made.append(Device(tmp_path / device_id, device_id, packages, mqtt_broker.url, shared_dir, **options))
        return made[-1]

    yield make
    for d in made:
        d.stop()


class StallingOperator(Operator):
    """Serves the first 3 chunks asked for, then nothing: an operator (or its link) gone mid-download."""
    served = 0

    def _serve(self, device, chunks, offer, package, progress):
        take = chunks[:max(3 - self.served, 0)]
        self.served += len(take)
        super()._serve(device, take, offer, package, progress)


def ota_state(broker, device_id: str) -> dict:
    message = broker.retained(contract.ota_topic(device_id)).json()
    OTA_SCHEMA.validate(message)
    return message


def push(broker, package: Path, devices: list[str], timeout: float = 90.0, **offer):
    with Operator(broker.url) as operator:
        return operator.push(Offer.of(package, **offer), devices, timeout=timeout), operator.wire


@contextmanager
def http_server(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def works_after(sub, device: Device, count: int = 2) -> None:
    """The device gives new results: its `current` slot runs."""
    seen = len(sub.on(device.results_topic()))
    sub.wait_for(device.results_topic(), seen + count, timeout=30)


def test_good_update_switches_slots_and_stays(device, packages, mqtt_broker, mqtt_subscriber, edge_daemon):
    cam = device("cam-1")
    sub = mqtt_subscriber(mqtt_broker, [cam.results_topic(), contract.ota_topic(cam.id)])
    cam.start(edge_daemon)
    works_after(sub, cam)
    assert ota_state(mqtt_broker, cam.id)["bundles"] == {packages.name: {"active": "1", "standby": None}}

    # The first operator serves 3 chunks and goes away, the broker restarts mid-download; a second operator
    # offers the same package again and the device asks only for the chunks it still lacks.
    offer = Offer.of(packages.v2, chunk_size=32 * 1024)
    with StallingOperator(mqtt_broker.url) as first:
        assert first.push(offer, [cam.id], timeout=2)[cam.id].outcome is None
    mqtt_broker.stop()
    mqtt_broker.start()
    with Operator(mqtt_broker.url) as second:
        results = second.push(offer, [cam.id], timeout=90)
    assert results[cam.id].outcome == "done", cam.daemon.log[-3000:]
    count = -(-packages.v2.stat().st_size // offer.chunk_size)
    assert first.served == 3 and results[cam.id].chunks_sent <= count - 3
    state = ota_state(mqtt_broker, cam.id)
    assert state["state"] == "done" and state["offer"]["version"] == "2"
    assert state["bundles"][packages.name] == {"active": "2", "standby": "1"}
    assert os.readlink(cam.slots.link) == "2" and cam.slots.standby == "1"
    # every chunk crossed once or so (QoS 1 may repeat one), each with its 32-byte hash
    size = packages.v2.stat().st_size
    payload = first.wire.chunk_bytes + second.wire.chunk_bytes - 32 * (first.served + results[cam.id].chunks_sent)
    assert size <= payload <= 1.2 * size
    seen_states = [json.loads(m.payload)["state"] for m in sub.on(contract.ota_topic(cam.id))]
    assert {"downloading", "checking", "done"} <= set(seen_states)
    works_after(sub, cam)
    assert "now points at 2" in cam.daemon.log


def test_bad_update_by_url_rolls_back_on_its_own_and_an_untrusted_one_is_refused(device, packages, mqtt_broker,
                                                                          mqtt_subscriber, edge_daemon):
    cam = device("cam-1")
    sub = mqtt_subscriber(mqtt_broker, [cam.results_topic()])
    cam.start(edge_daemon)
    works_after(sub, cam)

    # fetched from an HTTP URL this time (the offer names it; no chunks over MQTT)
    with http_server(packages.bad.parent) as base:
        results, wire = push(mqtt_broker, packages.bad, [cam.id], url=f"{base}/{packages.bad.name}")
    assert results[cam.id].outcome == "rolled_back", cam.daemon.log[-3000:]
    assert wire.chunk_bytes == 0 and results[cam.id].chunks_sent == 0
    state = ota_state(mqtt_broker, cam.id)
    assert "health check failed" in state["error"] and "frame(s) failed" in state["error"]
    assert state["timings"]["rollback_s"] > 0
    assert state["bundles"][packages.name]["active"] == "1" and os.readlink(cam.slots.link) == "1"
    assert not (cam.bundles / packages.name / "3").exists()       # the bad slot is cleared
    works_after(sub, cam)

    # Delivered whole over MQTT, but signed by a key this device does not trust: refused, nothing changed.
    before = sorted(p.name for p in (cam.bundles / packages.name).iterdir())
    results, _ = push(mqtt_broker, packages.untrusted, [cam.id])
    assert results[cam.id].outcome == "failed"
    state = ota_state(mqtt_broker, cam.id)
    assert "does not trust" in state["error"] and state["bundles"][packages.name]["active"] == "1"
    assert sorted(p.name for p in (cam.bundles / packages.name).iterdir()) == before
    # A bundle no pipeline of this device runs: refused in the reply, before anything is fetched.
    results, wire = push(mqtt_broker, packages.other_name, [cam.id])
    assert results[cam.id].outcome == "refused" and "no pipeline here runs bundle 'other'" in results[cam.id].refused
    assert wire.chunk_bytes == 0
    works_after(sub, cam)


def test_ota_config_needs_a_bundles_dir_and_a_group_is_one_topic_level(tmp_path, packages):
    from edge.daemon.config import load_daemon_config
    from runtimes.errors import ConfigError

    bundle = tmp_path / "b"
    config = tmp_path / "edge.yaml"
    base = (f"device_id: cam-1\nbroker: {{url: 'mqtt://127.0.0.1:1883'}}\nstate_dir: {tmp_path / 's'}\n"
            f"pipelines:\n  - {{name: seg, bundle: {packages.v1.parent / 'bundle'}, source: {tmp_path}}}\n")
    config.write_text(base + "ota: {health_frames: 2}\n")
    with pytest.raises(ConfigError, match="'ota' needs 'bundles_dir'"):
        load_daemon_config(config)
    config.write_text(base + f"bundles_dir: {bundle}\ngroup: 'lab/#'\nota: {{}}\n")
    with pytest.raises(ConfigError, match="group"):
        load_daemon_config(config)
    config.write_text(base + f"bundles_dir: {bundle}\ngroup: lab\nota: {{}}\n")
    loaded = load_daemon_config(config)
    assert loaded.group == "lab" and loaded.ota.health_frames == 3 and loaded.ota.trusted_keys


# step the daemon is killed at (EDGE_OTA_CRASH_AT) -> the package offered -> how the update ends after restart
CRASHES = {"downloading": ("v2", "done"),          # resumes the chunks it has, then installs
           "verifying": ("v2", "done"),            # verified, not yet unpacked: verified and unpacked again
           "installed": ("v2", "done"),            # the unpacked standby slot is kept: switches after restart
           "switching": ("v2", "rolled_back"),     # journal says switching: an unconfirmed switch is undone
           "switched": ("v2", "rolled_back"),      # `current` renamed, pipelines not yet restarted
           "checking": ("v2", "rolled_back"),      # new bundle running, health check not passed
           "rolling_back": ("bad", "rolled_back")}  # killed in the middle of undoing a bad update


@pytest.mark.parametrize("step", CRASHES)
def test_kill_9_at_each_step_leaves_a_working_slot(step, device, packages, mqtt_broker, mqtt_subscriber,
                                                    edge_daemon):
    package, expected = CRASHES[step]
    cam = device("cam-1")
    sub = mqtt_subscriber(mqtt_broker, [cam.results_topic()])
    first = cam.start(edge_daemon, crash_at=step)
    works_after(sub, cam, 1)
    outcome: dict = {}
    pusher = threading.Thread(target=lambda: outcome.update(push(mqtt_broker, getattr(packages, package), [cam.id],
                                                                 chunk_size=64 * 1024)[0]))
    pusher.start()
    assert first.process.wait(timeout=60) == -9, first.log[-3000:]
    if step == "verifying":         # killed after the signature check, before the new slot was unpacked
        assert not (cam.bundles / packages.name / "2").exists() and os.readlink(cam.slots.link) == "1"
    again = cam.start(edge_daemon)
    pusher.join(timeout=120)
    assert outcome[cam.id].outcome == expected, again.log[-3000:]
    # a working slot: `current` names a whole version folder and the daemon gives results from it
    active = os.readlink(cam.slots.link)
    assert (cam.bundles / packages.name / active / "manifest.json").is_file()
    assert active == ("2" if expected == "done" else "1")
    assert ota_state(mqtt_broker, cam.id)["bundles"][packages.name]["active"] == active
    works_after(sub, cam)
    if step == "downloading":
        assert "resuming the download" in again.log


def test_group_rollout_stops_at_a_failed_canary_then_updates_the_group(device, packages, mqtt_broker,
                                                                       mqtt_subscriber, edge_daemon):
    cams = [device(f"cam-{n}", group="lab") for n in (1, 2)]
    outsider = device("cam-9", group="hall")
    sub = mqtt_subscriber(mqtt_broker, [c.results_topic() for c in (*cams, outsider)])
    for cam in (*cams, outsider):
        cam.start(edge_daemon)
    for cam in (*cams, outsider):
        works_after(sub, cam, 1)

    def cli(package: Path) -> tuple[int, dict]:
        proc = subprocess.run([sys.executable, "-m", "edge", "ota", "push", str(package), "--group", "lab",
                               "--canary", "1", "--mqtt", mqtt_broker.url, "--chunk-kb", "128", "--json",
                               "--timeout", "90"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    code, report = cli(packages.bad)
    assert code == 1
    assert report["devices"] == {"cam-1": "rolled_back", "cam-2": "not offered"}
    assert report["stopped"].startswith("canary cam-1 ended rolled_back")
    assert ota_state(mqtt_broker, "cam-2")["state"] == "idle"

    code, report = cli(packages.v2)
    assert code == 0 and report["devices"] == {"cam-1": "done", "cam-2": "done"}
    for cam in cams:
        assert os.readlink(cam.slots.link) == "2"
        works_after(sub, cam)
    assert os.readlink(outsider.slots.link) == "1"            # another group: not offered
    assert ota_state(mqtt_broker, outsider.id)["state"] == "idle"


ACL_USERS = {"operator": "op-secret", "cam-a": "secret-a", "cam-b": "secret-b"}


def test_acl_only_the_operator_may_push(device, packages, shared_dir, tmp_path_factory, broker_pki,
                                         mqtt_subscriber, edge_daemon):
    """examples/mosquitto/edge.acl on a real broker: the operator's update goes through; another device's
    credentials (and the device's own) cannot offer an update, nor send chunks."""
    acl = (REPO_ROOT / "examples" / "mosquitto" / "edge.acl").read_text()
    lockdown = Lockdown(ca=broker_pki.ca, cert=broker_pki.server_cert, key=broker_pki.server_key,
                        users=ACL_USERS, acl=acl)
    broker = Broker(tmp_path_factory.mktemp("mosquitto-acl"), lockdown=lockdown)
    broker.start()
    try:
        def login(user: str) -> str:
            return f", tls: {{ca: {broker_pki.ca}}}, username: {user}, password: {ACL_USERS[user]}"

        def operator_as(user: str) -> Operator:
            return Operator(BrokerConfig(url=broker.url, tls={"ca": broker_pki.ca}, username=user,
                                         password=ACL_USERS[user]))

        cam = Device(tmp_path_factory.mktemp("cam-a"), "cam-a", packages, broker.url, shared_dir,
                     broker_extra=login("cam-a"))
        try:
            cam.start(edge_daemon)
            cam.daemon.wait_log("connected to broker")
            for user in ("cam-b", "cam-a"):           # another device's password, and the device's own
                with operator_as(user) as intruder:
                    results = intruder.push(Offer.of(packages.bad), ["cam-a"], timeout=4, reoffer_s=1.5)
                assert results["cam-a"].outcome is None and not results["cam-a"].accepted
            assert "offer of" not in cam.daemon.log
            with operator_as("operator") as operator:
                results = operator.push(Offer.of(packages.v2), ["cam-a"], timeout=90)
            assert results["cam-a"].outcome == "done", cam.daemon.log[-3000:]
            assert os.readlink(cam.slots.link) == "2"
        finally:
            cam.stop()
    finally:
        broker.stop()
