"""A private mosquitto on 127.0.0.1 for the demo and the tests: free port, own config, own folder.

Only ever binds the loopback interface; anonymous access is fine there and nowhere else.
Persistence is on with a 1 s autosave so a broker that is killed and restarted keeps sessions and
retained messages, as a real deployment's broker would.

`Lockdown` turns on what a real deployment has: TLS, a password file (made with mosquitto_passwd),
an ACL file and `use_username_as_clientid`, so each device is confined to its own topics.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
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


def mosquitto_passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd") or next(
        (p for p in ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd") if Path(p).is_file()), None)
    if not found:
        raise EdgeError("mosquitto_passwd is not installed (it comes with the mosquitto package)")
    return found


def wait_for_ports(process: subprocess.Popen, host: str, ports: list[int], timeout: float,
                   interval: float = 0.05) -> str | None:
    """Until every port on `host` accepts a TCP connection: None then; otherwise why not, "exited with N"
    (the process ended first) or "did not listen within T s". For servers started as child processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with {process.returncode}"
        try:
            for port in ports:
                socket.create_connection((host, port), timeout=0.5).close()
            return None
        except OSError:
            time.sleep(interval)
    return f"did not listen within {timeout:.0f} s"


@dataclass
class Lockdown:
    """TLS files (PEM paths), users and their passwords, and the ACL file's text."""

    ca: Path
    cert: Path
    key: Path
    users: dict[str, str] = field(default_factory=dict)
    acl: str = "pattern readwrite edge/%u/#\n"
    require_client_cert: bool = False

    def config_lines(self, workdir: Path) -> str:
        passwords, acl = workdir / "passwords", workdir / "acl"
        passwords.write_text("", encoding="utf-8")
        for user, password in self.users.items():
            subprocess.run([mosquitto_passwd_binary(), "-b", str(passwords), user, password],
                           check=True, capture_output=True)
        passwords.chmod(0o600)
        acl.write_text(self.acl, encoding="utf-8")
        acl.chmod(0o600)
        return (f"cafile {self.ca}\ncertfile {self.cert}\nkeyfile {self.key}\n"
                f"require_certificate {'true' if self.require_client_cert else 'false'}\n"
                "allow_anonymous false\n"
                f"password_file {passwords}\n"
                f"acl_file {acl}\n"
                "use_username_as_clientid true\n")


class LocalBroker:
    """`with LocalBroker() as broker: broker.url` — started on enter, stopped on exit."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, extra_config: str = "",
                 lockdown: Lockdown | None = None):
        self.host, self.port = "127.0.0.1", port or free_port()
        self.lockdown = lockdown
        self.url = f"{'mqtts' if lockdown else 'mqtt'}://{self.host}:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edge-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        self.config, self.log = self.workdir / "mosquitto.conf", self.workdir / "mosquitto.log"
        access = lockdown.config_lines(self.workdir) if lockdown else "allow_anonymous true\n"
        self.config.write_text(
            f"listener {self.port} {self.host}\n"
            f"{access}"
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
        waited = wait_for_ports(self.process, self.host, [self.port], timeout)
        if waited is None:
            return self
        if self.process.poll() is not None:
            raise EdgeError(f"mosquitto {waited}: {self.log_text()}")
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

    def thaw(self) -> None:
        """SIGCONT after freeze(): the broker reads what waited in its sockets and goes on."""
        if self.process:
            self.process.send_signal(signal.SIGCONT)

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
