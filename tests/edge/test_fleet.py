"""`edge fleet ls|watch`: real daemons and simulated devices on a real mosquitto, seen from one command."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import time

import pytest
from rich.console import Console

from edge import cli
from edge.broker import Lockdown
from edge.daemon import contract
from edge.daemon.config import BrokerConfig
from edge.daemon.metrics import MetricsCollector
from edge.fleet.table import fleet_table
from edge.fleet.view import Fleet, topic_filters

from ..conftest import REPO_ROOT, Broker
from .fleet_support import SimulatedDevice, SimulatedFleet, fleet_cli, fleet_rows

PIPELINE = "shelf"


def daemon_args(bundle, folder, broker, state, device: str) -> list[str]:
    return [str(bundle), "--source", str(folder), "--mqtt", broker.url, "--device-id", device,
            "--state-dir", str(state), "--poll-interval", "0.2", "--metrics-interval", "0.5"]


def test_the_view_reads_each_retained_topic_and_notes_what_it_cannot_read():
    fleet = Fleet()
    info = contract.status_description("cam-1", "0.1.0", "rpi5", [{"name": PIPELINE, "task": "ocr", "bundle": "ppocr"}])
    metrics = contract.metrics_message(device="cam-1", snapshot=MetricsCollector().snapshot({"spool_depth": 7}))
    ota = contract.ota_message(device="cam-1", group="north", state="downloading", offer=None,
                               bundles={"ppocr": {"active": "1.1", "standby": "1.0"}},
                               progress={"bytes": 250, "total": 1000})
    for topic, payload in ((contract.status_topic("cam-1"), b"online"),
                           (contract.status_info_topic("cam-1"), contract.encode_message(info)),
                           (contract.metrics_topic("cam-1"), contract.encode_message(metrics)),
                           (contract.ota_topic("cam-1"), contract.encode_message(ota)),
                           (contract.status_topic("cam-2"), b"offline"),
                           (contract.metrics_topic("cam-2"), b"{not json"),
                           ("edge/cam-3/shelf/results", b"{}")):          # not a fleet topic: ignored
        fleet.update(topic, payload)
    one, two = fleet.rows()
    assert [r["device"] for r in fleet.rows()] == ["cam-1", "cam-2"]
    assert (one["status"], one["version"], one["profile"], one["bundles"]) == ("online", "0.1.0", "rpi5", ["ppocr"])
    assert (one["spool_depth"], one["group"]) == (7, "north")
    assert (one["ota_state"], one["ota_progress"]) == ("downloading", 25.0)
    assert one["slots"] == {"ppocr": {"active": "1.1", "standby": "1.0"}} and one["problems"] == {}
    assert one["last_seen"] == max(info["ts"], metrics["ts"], ota["ts"])
    assert two["status"] == "offline" and two["fps"] is None and "not JSON" in two["problems"]["metrics"]
    # Payloads of the wrong shape are noted on their device; the table of the others still draws.
    fleet.update(contract.status_info_topic("cam-2"), b'{"schema": "edge.status/1", "pipelines": "none"}')
    fleet.update(contract.ota_topic("cam-2"), b'{"state": 3, "progress": {"bytes": "x", "total": 0}}')
    fleet.update(contract.metrics_topic("cam-2"), b'{"fps": "fast", "spool_depth": true}')
    two = fleet.rows()[1]
    assert "no list of pipelines" in two["problems"]["status/info"] and two["fps"] is None
    assert (two["ota_state"], two["ota_progress"], two["spool_depth"]) == (3, None, None)
    Console(file=io.StringIO(), width=200).print(fleet_table(fleet.rows()))
    fleet.update(contract.ota_topic("cam-1"), b"")                  # a cleared retained topic forgets its part
    assert fleet.rows()[0]["ota_state"] is None and fleet.rows()[0]["slots"] == {}
    assert topic_filters(["cam-1"])[0] == "edge/cam-1/status" and topic_filters()[0] == "edge/+/status"


def test_an_unreachable_broker_or_a_bad_device_id_is_one_line(tmp_path, capsys):
    broker_file = tmp_path / "broker.yaml"
    broker_file.write_text("url: mqtt://127.0.0.1:1\nusername: ops\npasword_env: EDGE_PW\n")
    for args, expected in ((["ls", "--mqtt", "mqtt://127.0.0.1:1"], "cannot reach the broker at 127.0.0.1:1"),
                           (["ls", "--mqtt", "mqtt://127.0.0.1:1", "--device", "a/#"], "not a usable device"),
                           (["watch", "--mqtt", "http://x"], "must start with mqtt://"),
                           (["ls", "--broker", str(broker_file)], f"{broker_file}:3: pasword_env")):
        assert cli.main(["fleet", *args]) == 2
        out = capsys.readouterr()
        assert out.out == "" and out.err.count("\n") == 1 and expected in out.err, out


def test_operator_credentials_and_tls_come_from_a_broker_file(tmp_path, broker_pki, monkeypatch, capsys):
    users = {"cam-1": "pw-device", "ops": "pw-operator"}
    lockdown = Lockdown(ca=broker_pki.ca, cert=broker_pki.server_cert, key=broker_pki.server_key, users=users,
                        acl="pattern readwrite edge/%u/#\n\nuser ops\ntopic read edge/#\n")
    broker = Broker(tmp_path / "broker", lockdown=lockdown).start()
    device = SimulatedDevice(BrokerConfig(url=broker.url, tls={"ca": broker_pki.ca}, username="cam-1",
                                          password=users["cam-1"]), "cam-1", tmp_path / "cam-1")
    try:
        device.publisher.start()
        deadline = time.monotonic() + 15
        while not device.publisher.connected and time.monotonic() < deadline:
            device.publisher.pump(timeout=0.1)
        assert device.publisher.connected, broker.log_text()
        monkeypatch.setenv("EDGE_TEST_OPS_PASSWORD", users["ops"])
        shutil.copy(broker_pki.ca, tmp_path / "ca.crt")
        for name, password_env in (("ops", "EDGE_TEST_OPS_PASSWORD"), ("wrong", "EDGE_TEST_WRONG")):
            # A relative path is from the file's folder, as in a daemon config.
            (tmp_path / f"{name}.yaml").write_text(f"url: {broker.url}\ntls: {{ca: ca.crt}}\n"
                                                   f"username: ops\npassword_env: {password_env}\n")
        monkeypatch.setenv("EDGE_TEST_WRONG", "not-the-password")
        row = fleet_rows(None, "--broker", str(tmp_path / "ops.yaml"))["cam-1"]
        slots = {"lcnet": {"active": "1.0", "standby": None}}
        assert (row["status"], row["bundles"], row["slots"]) == ("online", ["lcnet"], slots)
        assert cli.main(["fleet", "ls", "--broker", str(tmp_path / "wrong.yaml")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused: Not authorized" in err, err
    finally:
        device.close()
        broker.stop()


def test_fleet_shows_real_daemons_and_a_killed_one_goes_offline(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, edge_daemon):
    folders = {device: tmp_path / device for device in ("cam-a", "cam-b")}
    daemons = {}
    for device, folder in folders.items():
        folder.mkdir()
        shutil.copy(shared_dir / "images" / "ocr_word_en_10.png", folder / "word.png")
        daemons[device] = edge_daemon(daemon_args(ocr_bundle_dir, folder, mqtt_broker, tmp_path / f"{device}.state",
                                                  device))
    for daemon in daemons.values():
        daemon.wait_log(r"result seq=1 ", timeout=60)
    bundle = ocr_bundle_dir.name
    rows = _wait_rows(mqtt_broker.url, lambda rows: all(rows.get(d, {}).get("fps") is not None for d in folders))
    for device in folders:
        row = rows[device]
        assert (row["status"], row["bundles"], row["broker_connected"]) == ("online", [bundle], True), row
        assert row["spool_depth"] == 0 and row["last_seen"] and row["problems"] == {}, row

    watch = subprocess.Popen([sys.executable, "-m", "edge", "fleet", "watch", "--mqtt", mqtt_broker.url, "--json"],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _JsonLines(watch)
        assert {lines.next()["device"] for _ in folders} == set(folders)     # the present first, one line each
        daemons["cam-b"].kill()             # SIGKILL: the broker publishes its last will
        change = lines.until(lambda row: row["device"] == "cam-b" and row["status"] == "offline")
        assert change["bundles"] == [bundle]                    # what it ran is still known
    finally:
        watch.kill()
        watch.wait()
    table = fleet_cli("ls", "--mqtt", mqtt_broker.url)
    assert table.returncode == 0 and "2 device(s): 1 online, 1 offline" in table.stdout, table
    assert [line.split()[:3:2] for line in table.stdout.splitlines() if line.startswith("cam-")] == \
        [["cam-a", "online"], ["cam-b", "offline"]]


def test_twenty_simulated_devices_all_show(tmp_path, mqtt_broker):
    fleet = SimulatedFleet(mqtt_broker.url, 20, tmp_path, groups=2)
    try:
        stats = fleet.run(frames_each=5)
        assert stats["results_acked"] == 100 and stats["metrics_sent"] == 20
        rows = fleet_rows(mqtt_broker.url)
        assert sorted(rows) == [f"sim-{n:03d}" for n in range(20)]
        assert {r["status"] for r in rows.values()} == {"online"}
        slots = {"lcnet": {"active": "1.0", "standby": None}}
        assert all(r["fps"] > 0 and r["spool_depth"] == 0 and r["slots"] == slots for r in rows.values())
        assert sorted({r["group"] for r in rows.values()}) == ["site-0", "site-1"]
    finally:
        fleet.close()
    assert {r["status"] for r in fleet_rows(mqtt_broker.url).values()} == {"offline"}    # clean stops say so


def _wait_rows(url: str, ready, timeout: float = 30.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = fleet_rows(url, "--settle", "1")
        if ready(rows) or time.monotonic() > deadline:
            return rows


class _JsonLines:
    """Lines of a running `edge fleet watch --json`, read in a thread so a silent process fails, not hangs."""

    def __init__(self, process: subprocess.Popen, timeout: float = 30.0):
        self.rows: list[dict] = []
        self.timeout, self._cond, self._taken = timeout, threading.Condition(), 0
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._cond:
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    self.rows.append({"not JSON": line})      # fails the test in next(), with the line
                self._cond.notify_all()

    def next(self) -> dict:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.rows) > self._taken, self.timeout):
                pytest.fail(f"edge fleet watch printed nothing more within {self.timeout:.0f} s")
            self._taken += 1
            row = self.rows[self._taken - 1]
        assert "not JSON" not in row, row
        return row

    def until(self, wanted) -> dict:
        while not wanted(row := self.next()):
            pass
        return row
