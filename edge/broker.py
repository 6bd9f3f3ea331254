"""A private mosquitto on 127.0.0.1 for the demo and the tests: free port, own config, own folder.

Only ever binds the loopback interface; anonymous access is fine there and nowhere else.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from runtimes.errors import EdgeError

SEARCH_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next((p for p in SEARCH_PATHS if Path(p).is_file()), None)
    if not found:
        raise EdgeError("mosquitto is not installed: apt-get install mosquitto (.ci/run and 'make demo' do it)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """`with LocalBroker() as broker: broker.url` — started on enter, stopped on exit."""

    def __init__(self, port: int | None = None, workdir: Path | None = None, extra_config: str = ""):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edge-broker-"))
        self.extra_config = extra_config
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                          f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
                          f"{self.extra_config}", encoding="utf-8")
        log = open(self.workdir / "mosquitto.log", "ab")
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgeError(f"mosquitto exited at start (see {self.workdir / 'mosquitto.log'})")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EdgeError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout:.0f} s")

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash or power loss would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
