"""Fleet tests' parts: simulated devices (the real publisher and spool), a real RabbitMQ with its MQTT
plugin, a mosquitto bridged to another, and `edge fleet ls` run as a user runs it.

A simulated device is what the daemon is on the wire without the pipelines: `MqttPublisher` over its own
SQLite `Spool`, the retained status (and last will), `status/info`, `edge.result/1` messages through the
spool, retained `edge.metrics/1` and a retained `edge.ota/1` state. Fifty of them fit in one process.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge import cli
from edge.broker import free_port, wait_for_ports
from edge.daemon import contract
from edge.daemon.config import BrokerConfig
from edge.daemon.metrics import MetricsCollector
from edge.daemon.mqtt import MqttPublisher
from edge.daemon.spool import Spool, StateDb
from runtimes import __version__
from runtimes.errors import EdgeError

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE, BUNDLE = "shelf", "lcnet"
LATENCY = {"pre": 1.5, "infer": 6.0, "post": 0.5}


class SimulatedDevice:
    """One device's MQTT side, driven by the caller's thread (`pump`)."""

    def __init__(self, broker: BrokerConfig | str, device: str, state_dir: Path, group: str | None = None,
                 version: str = "1.0"):
        self.device = device
        self.db = StateDb(state_dir)
        self.spool = Spool(self.db)
        self.publisher = MqttPublisher(broker, device, self.spool)
        self.metrics = MetricsCollector()
        self.metrics.add_pipeline(PIPELINE)
        self.seq = 0
        self.publisher.announce(contract.status_info_topic(device), contract.encode_message(
            contract.status_description(device, __version__, "x86-vnni",
                                        [{"name": PIPELINE, "task": "classification", "bundle": BUNDLE}],
                                        started=contract.utc_timestamp())))
        self.publisher.announce(contract.ota_topic(device), contract.encode_message(contract.ota_message(
            device=device, group=group, state="idle", offer=None,
            bundles={BUNDLE: {"active": version, "standby": None}})))

    def infer(self, frames: int) -> None:
        """`frames` results into the spool, as a pipeline adds them."""
        for _ in range(frames):
            self.seq += 1
            self.metrics.record(LATENCY, pipeline=PIPELINE)
            message = contract.result_message(device=self.device, pipeline=PIPELINE, models=[BUNDLE],
                                              source=f"frame-{self.seq}", seq=self.seq, latency_ms=LATENCY,
                                              results=[{"label": "bottle", "score": 0.9, "class_id": 3}])
            self.publisher.publish(contract.results_topic(self.device, PIPELINE), contract.encode_message(message))

    def publish_metrics(self) -> bool:
        extra = {"spool_depth": len(self.spool), "unacked": self.publisher.inflight,
                 "connected": self.publisher.connected, "uptime_s": 1.0, "spool_capacity": self.spool.max_messages}
        message = contract.metrics_message(device=self.device, snapshot=self.metrics.snapshot(extra))
        return self.publisher.send_now(contract.metrics_topic(self.device), contract.encode_message(message),
                                       qos=0, retain=True)

    def close(self) -> None:
        self.publisher.stop()
        self.db.close()


class SimulatedFleet:
    """`count` simulated devices on one broker; `run` connects them, sends results and metrics, counts."""

    def __init__(self, url: str, count: int, folder: Path, groups: int = 2):
        self.devices = [SimulatedDevice(url, f"sim-{n:03d}", folder / f"sim-{n:03d}", group=f"site-{n % groups}")
                        for n in range(count)]
        self.stats: dict[str, float] = {}

    def pump_until(self, done, timeout: float, what: str) -> float:
        """Pump every device until `done()`; seconds taken. EdgeError naming `what` on timeout."""
        started = time.monotonic()
        while not done():
            if time.monotonic() - started > timeout:
                raise EdgeError(f"simulated fleet: {what} not done within {timeout:.0f} s")
            for device in self.devices:
                device.publisher.pump()
            time.sleep(0.005)
        return time.monotonic() - started

    def run(self, frames_each: int, timeout: float = 60.0) -> dict[str, float]:
        started = time.monotonic()
        for device in self.devices:
            device.publisher.start()
        self.pump_until(lambda: all(d.publisher.connected for d in self.devices), timeout, "connecting")
        self.stats["connect_s"] = time.monotonic() - started
        for device in self.devices:
            device.infer(frames_each)
        self.stats["results_s"] = self.pump_until(lambda: not any(len(d.spool) for d in self.devices),
                                                  timeout, "acknowledging every result")
        self.stats["results_acked"] = sum(d.publisher.acked for d in self.devices)
        self.stats["metrics_sent"] = sum(d.publish_metrics() for d in self.devices)
        return self.stats

    def close(self) -> None:
        for device in self.devices:
            device.close()


def fleet_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`edge fleet ...` in a child process, as an operator runs it."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "edge", "fleet", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def fleet_rows(url: str | None, *args: str) -> dict[str, dict]:
    """`edge fleet ls --json [--mqtt URL] ARGS` (in this process: no interpreter start) -> device id -> its row."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["fleet", "ls", "--json", *(["--mqtt", url] if url else []), *args])
    if code != 0:
        raise AssertionError(f"edge fleet ls exited {code}: {err.getvalue()}")
    return {row["device"]: row for row in json.loads(out.getvalue())}


# --- a mosquitto bridged to a central one ------------------------------------------------------------

def bridge_config(central_port: int, name: str) -> str:
    """Device-side mosquitto config: everything under edge/ goes to the central broker (retain flags
    kept), commands for the devices come back."""
    return (f"connection {name}\n"
            f"address 127.0.0.1:{central_port}\n"
            f"remote_clientid bridge-{name}\n"
            "cleansession false\n"          # the central broker keeps the bridge's session over outages
            "try_private true\n"
            "notifications true\n"         # `notice_topic(name)` says 1 on the central broker once connected
            "restart_timeout 1 5\n"
            "topic edge/# out 1\n"
            "topic edge/+/cmd/+ in 1\n")


def notice_topic(name: str) -> str:
    return f"$SYS/broker/connection/bridge-{name}/state"


# --- RabbitMQ with its MQTT plugin, as a normal process -------------------------------------------------

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"     # the script itself: the sbin wrapper su's to 'rabbitmq'
RABBITMQ_HINT = "RabbitMQ is not installed: apt-get install rabbitmq-server (its MQTT plugin ships with it)"


def rabbitmq_available() -> bool:
    return Path(RABBITMQ_SERVER).is_file() and shutil.which("epmd") is not None


class RabbitBroker:
    """A private RabbitMQ node on 127.0.0.1 with only the MQTT listener: own epmd, ports, data and logs."""

    def __init__(self, workdir: Path):
        self.host, self.port = "127.0.0.1", free_port()
        self.url = f"mqtt://{self.host}:{self.port}"
        self.workdir = workdir
        for sub in ("mnesia", "log", "home"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        (workdir / "rabbitmq.conf").write_text(
            "listeners.tcp = none\n"                       # no AMQP port: MQTT only
            f"mqtt.listeners.tcp.default = {self.host}:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "loopback_users = none\n", encoding="utf-8")
        (workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", encoding="utf-8")
        self.epmd_port = free_port()
        self.env = dict(os.environ, HOME=str(workdir / "home"), ERL_EPMD_PORT=str(self.epmd_port),
                        RABBITMQ_NODENAME=f"edge{self.port}@localhost", RABBITMQ_DIST_PORT=str(free_port()),
                        RABBITMQ_MNESIA_BASE=str(workdir / "mnesia"), RABBITMQ_LOG_BASE=str(workdir / "log"),
                        RABBITMQ_CONFIG_FILE=str(workdir / "rabbitmq.conf"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(workdir / "enabled_plugins"),
                        RABBITMQ_PID_FILE=str(workdir / "rabbitmq.pid"))
        self.epmd: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None
        self.started_in: float | None = None

    def start(self, timeout: float = 60.0) -> "RabbitBroker":
        """Until the MQTT port accepts connections; EdgeError with the log's tail if not within `timeout` s."""
        began = time.monotonic()
        # Its own epmd in the foreground, so that stopping the test leaves no daemon behind.
        self.epmd = subprocess.Popen(["epmd", "-port", str(self.epmd_port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        log = open(self.workdir / "server.out", "wb")
        self.server = subprocess.Popen([RABBITMQ_SERVER], env=self.env, cwd=self.workdir, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        waited = wait_for_ports(self.server, self.host, [self.port], timeout - (time.monotonic() - began), 0.2)
        if waited is None:
            self.started_in = time.monotonic() - began
            return self
        exited = self.server.poll() is not None
        self.stop()
        if exited:
            raise EdgeError(f"rabbitmq-server {waited}: {self.log_text()}")
        raise EdgeError(f"RabbitMQ's MQTT listener did not open within {timeout:.0f} s: {self.log_text()}")

    def stop(self) -> None:
        """SIGKILL to the node's own process group (the script and the Erlang VM), then its epmd."""
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.kill()
            self.epmd.wait()
        self.server = self.epmd = None

    def log_text(self) -> str:
        path = self.workdir / "server.out"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def __enter__(self) -> "RabbitBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
