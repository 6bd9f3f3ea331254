"""Shared fixtures: the shared/ folder, the OCR bundle, a real mosquitto broker, MQTT subscribers, a daemon process."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from edge.broker import MOSQUITTO_HINT, LocalBroker, mosquitto_binary
from runtimes.errors import EdgeError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder {SHARED_DIR} is absent (the repo's sibling ../shared)")
    return SHARED_DIR


OCR_CALIBRATION_PREFIXES = ("ocr_", "det_layout", "cls_img")
# A profile that builds only the FP32 ONNX artifact: for tests of a task's runtime, not of quantization.
FP32_ONLY_PROFILE = """\
name: test-onnx-fp32
description: ONNX FP32 only (tests)
family: x86
arch: x86_64
accelerator: cpu
threads: 1
artifacts:
  - format: onnx
    precision: fp32
"""


def write_fp32_profile(folder: Path) -> Path:
    path = folder / "fp32.yaml"
    path.write_text(FP32_ONLY_PROFILE, encoding="utf-8")
    return path


def convert_bundle(out: Path, sources: list[Path], profile: str | Path, calib: Path) -> Path:
    """The real `edge convert`, in a child process as a user runs it; fails the test with its one-line error."""
    argv = [sys.executable, "-m", "edge", "convert", *map(str, sources), "--profile", str(profile),
            "--calib", str(calib), "-o", str(out), "--quiet"]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500)
    if proc.returncode != 0:
        pytest.fail(f"edge convert failed ({proc.returncode}): {proc.stderr[-2000:]}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def ocr_bundle_dir(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real PP-OCRv4 export converted for x86-vnni (INT8 where it earns it), once per session.

    EDGE_OCR_BUNDLE points at an existing bundle instead (to iterate on the runtime quickly)."""
    if os.environ.get("EDGE_OCR_BUNDLE"):
        return Path(os.environ["EDGE_OCR_BUNDLE"])
    models = shared_dir / "models" / "PP-OCR"
    sources = [models / "ch_PP-OCRv4_det", models / "ch_ppocr_mobile_v2_cls", models / "ch_PP-OCRv4_rec"]
    # Calibrate as an OCR user would: on pictures of text (documents, signs, labels), not on street scenes.
    calib = tmp_path_factory.mktemp("ocr_calib")
    for image in sorted((shared_dir / "images").glob("*")):
        if image.name.startswith(OCR_CALIBRATION_PREFIXES):
            shutil.copyfile(image, calib / image.name)
    return convert_bundle(tmp_path_factory.mktemp("bundles") / "ppocr", sources, "x86-vnni", calib)


# --- a real mosquitto -------------------------------------------------------------------------

class Broker(LocalBroker):
    """The product's LocalBroker plus what tests need to watch it."""

    def wait_saved(self, since: float, timeout: float = 10.0) -> None:
        """Until the persistence file was written after `since` (a time.time() value)."""
        db = self.workdir / "data" / "mosquitto.db"
        deadline = time.monotonic() + timeout
        while not (db.exists() and db.stat().st_mtime > since):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not save {db} within {timeout:.0f} s")
            time.sleep(0.1)

    def retained(self, topic: str, timeout: float = 10.0, text: str | None = None) -> "Received":
        """The message the broker retains on `topic`, as a new subscriber receives it (with `text`: once
        the retained message says that, e.g. a will the broker is about to send). A message that
        arrives live (retain flag off) was published after the subscription was made, so the broker
        may retain it only now: ask again with a new subscriber rather than judge the live copy."""
        deadline = time.monotonic() + timeout
        while True:
            sub = Subscriber(self, [topic])
            try:
                message = sub.wait_for(topic, 1, max(deadline - time.monotonic(), 0.1))[0]
            finally:
                sub.close()
            wanted = message.retain and (text is None or message.text == text)
            if wanted or time.monotonic() >= deadline:
                return message
            time.sleep(0.05)


@pytest.fixture
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    try:
        mosquitto_binary()
    except EdgeError:
        pytest.fail(MOSQUITTO_HINT, pytrace=False)
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --- a real subscriber --------------------------------------------------------------------------

@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


class Subscriber:
    """A paho client that collects what arrives on `topics` (QoS 1), resubscribing after reconnects.

    `persistent=True` keeps its session on the broker (clean_session off), so messages published
    while it is disconnected are kept for it.
    """

    def __init__(self, broker: Broker, topics: list[str], persistent: bool = False):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = topics
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:12]}",
                                  protocol=paho.MQTTv311, clean_session=not persistent)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self.topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"subscriber could not subscribe to {topics}")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, count: int, timeout: float = 30.0,
                 distinct: Callable[[Received], Any] | None = None) -> list[Received]:
        """At least `count` messages on `topic` (or distinct `distinct(message)` values, since QoS 1
        may deliver a message twice); fails the test with what did arrive otherwise."""
        def enough() -> bool:
            arrived = [m for m in self.messages if m.topic == topic]
            return len(set(map(distinct, arrived)) if distinct else arrived) >= count

        deadline = time.monotonic() + timeout
        with self._cond:
            while not enough():
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:120]) for m in self.messages]
                    pytest.fail(f"wanted {count} message(s) on {topic} within {timeout:.0f} s; got: {seen}")
                self._cond.wait(left)
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., Subscriber]]:
    """Factory: mqtt_subscriber(broker, ["edge/dev/#"], persistent=False) -> a connected Subscriber."""
    made: list[Subscriber] = []

    def make(broker: Broker, topics: list[str], persistent: bool = False) -> Subscriber:
        made.append(Subscriber(broker, topics, persistent))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


# --- the daemon as a separate process -------------------------------------------------------------

class DaemonProcess:
    """`python -m edge.daemon ...` with its stderr collected line by line; `prefix` runs it through another
    command that execs it (e.g. `ip netns exec NAME`, tests/netns.py)."""

    def __init__(self, args: list[str], prefix: tuple[str, ...] = ()):
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([*prefix, sys.executable, "-m", "edge.daemon", *args], cwd=REPO_ROOT,
                                        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr or ():
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        """At least `count` stderr lines matching the regex `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(hits := [ln for ln in self.lines if regex.search(ln)]) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None and not self._reader.is_alive():
                    pytest.fail(f"daemon log never had {count} line(s) matching {pattern!r}:\n{self.log}")
                self._cond.wait(min(left, 0.5))
        return hits

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and the exit code. The daemon's own worst case is a frame in progress (30 s) plus the
        wait for acks (10 s) plus the offline status (2 s), so the default leaves room above that."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"daemon still running {timeout:.0f} s after SIGTERM; its log:\n{self.log[-4000:]}",
                        pytrace=False)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def edge_daemon() -> Iterator[Callable[[list[str]], DaemonProcess]]:
    """Factory: edge_daemon([BUNDLE, "--source", DIR, ...]) -> a running DaemonProcess, killed at teardown."""
    started: list[DaemonProcess] = []

    def start(args: list[str]) -> DaemonProcess:
        started.append(DaemonProcess(args))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


# --- a locked-down broker: TLS certificates made on the fly --------------------------------------

@dataclass
class Pki:
    """PEM files of a throw-away CA, a server certificate for 127.0.0.1 and client certificates."""
    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) for a client called `name`, signed by the CA (made once)."""
        cert, key = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        if not cert.exists():
            _issue(self.folder, name, cert, key, server=False)
        return cert, key


def _issue(folder: Path, name: str, cert_path: Path, key_path: Path, *, server: bool) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)


def make_pki(folder: Path) -> Pki:
    """A CA and a server certificate (SAN 127.0.0.1, localhost), with the `cryptography` package."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    _issue(folder, "127.0.0.1", folder / "server.crt", folder / "server.key", server=True)
    return Pki(folder, folder / "ca.crt", folder / "server.crt", folder / "server.key")


@pytest.fixture(scope="session")
def broker_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pytest.importorskip("cryptography", reason="the TLS tests make their certificates with 'cryptography'")
    return make_pki(tmp_path_factory.mktemp("pki"))


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`edge ARGV` in this process (edge.cli.main): its exit code, stdout and stderr."""
    from edge import cli
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err
