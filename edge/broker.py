"""A private mosquitto on 127.0.0.1 for the demo and the tests: free port, own config, own folder.

Only ever binds the loopback interface; anonymous access is fine there and nowhere else.
Persistence is on with a 1 s autosave so a broker that is killed and restarted keeps sessions and
retained messages, as a real deployment's broker would.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from runtimes.errors import EdgeError

SEARCH_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")
MOSQUITTO_HINT = "mosquitto is not installed: apt-get install mosquitto ('make demo' and .ci/run do it)"


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next((p for p in SEARCH_PATHS if Path(p).is_file()), None)
    if not found:
        raise EdgeError(MOSQUITTO_HINT)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """`with LocalBroker() as broker: broker.url` — started on enter, stopped on exit."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, extra_config: str = ""):
        self.host, self.port = "127.0.0.1", port or free_port()
        self.url = f"mqtt://{self.host}:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edge-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        self.config, self.log = self.workdir / "mosquitto.conf", self.workdir / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "user root\n"                          # started as root it would switch to 'mosquitto'
            "persistence true\n"
            "autosave_interval 1\n"
            f"persistence_location {self.workdir / 'data'}/\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"{extra_config}", encoding="utf-8")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgeError(f"mosquitto exited with {self.process.returncode}: {self.log_text()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EdgeError(f"mosquitto did not accept connections on port {self.port}: {self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes mid-conversation, keeping only its last autosave."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        if self.process:
            self.process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        """SIGTERM: clients lose their connection; mosquitto saves its persistence file first."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)   # a frozen broker cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
