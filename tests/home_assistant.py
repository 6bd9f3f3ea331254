"""A real Home Assistant for integration tests: its own venv, configured without the UI.

Home Assistant pins many packages, so it never enters the project's environment: it lives in a
venv of its own under the test cache (`~/.cache/edge-test/ha-venv`, `EDGE_TEST_CACHE` to move it),
made once (`ensure_venv`, a few minutes from PyPI) and reused. 2024.3 is the newest release that
runs on Python 3.11; its MQTT integration needs paho-mqtt 1.6.1 (its manifest's requirement), which
we install with it (and the requirements of the integrations it always loads), so Home Assistant starts with `--skip-pip` and never installs anything itself.

A config folder gets what the UI would otherwise write: `configuration.yaml` (http on a free
127.0.0.1 port, the REST API), a config entry for MQTT pointing at the test broker
(`.storage/core.config_entries`), and an owner with a long-lived access token (`.storage/auth`;
the token is the JWT Home Assistant itself would sign with the refresh token's `jwt_key`).
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

HA_VERSION = "2024.3.3"
# josepy 2 dropped what the acme release hass-nabucasa pulls in imports (http imports it on every request)
HA_PACKAGES = [f"homeassistant=={HA_VERSION}", "josepy<2"]
# The requirements (manifest.json) of what it sets up here, so it runs with --skip-pip: the integrations
# it always loads (frontend, backup, hardware, person, file_upload, ...) and MQTT's paho-mqtt 1.6.1.
HA_INTEGRATION_PACKAGES = ["paho-mqtt==1.6.1", "home-assistant-frontend==20240307.0", "Pillow==10.2.0",
                           "janus==1.0.0", "psutil-home-assistant==0.0.1", "securetar==2024.2.1",
                           "SQLAlchemy==2.0.27", "fnv-hash-fast==0.5.0", "numpy"]
CACHE_DIR = Path(os.environ.get("EDGE_TEST_CACHE", Path.home() / ".cache" / "edge-test"))
VENV_DIR = CACHE_DIR / "ha-venv"
START_TIMEOUT_S = 180.0


class HomeAssistantUnavailable(RuntimeError):
    """The venv could not be made (no PyPI, no venv module): said in one line."""


def ensure_venv(venv: Path = VENV_DIR) -> Path:
    """The venv's python, with Home Assistant installed (once; a lock keeps parallel sessions apart)."""
    python = venv / "bin" / "python"
    stamp = venv / f"edge-ha-{HA_VERSION}.ok"
    if stamp.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "ha-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return python
        constraints = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / \
            "homeassistant" / "package_constraints.txt"       # what Home Assistant itself installs against
        steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
                 [str(python), "-m", "pip", "install", "-q", *HA_PACKAGES],
                 [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *HA_INTEGRATION_PACKAGES]]
        for argv in steps:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise HomeAssistantUnavailable(f"{' '.join(argv[:4])} failed: {tail[0]}")
        stamp.write_text(HA_VERSION + "\n")
    return python


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(refresh_id: str, jwt_key: str, lifetime_s: int = 10 * 365 * 86400) -> str:
    """An HS256 JWT as Home Assistant's `async_create_access_token` makes it (iss = refresh token id)."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"iss": refresh_id, "iat": now - 5, "exp": now + lifetime_s}).encode())
    signature = hmac.new(jwt_key.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def _storage(key: str, data: dict[str, Any]) -> str:
    return json.dumps({"version": 1, "minor_version": 1, "key": key, "data": data}, indent=2)


def write_config(folder: Path, http_port: int, broker_host: str, broker_port: int) -> str:
    """A config folder Home Assistant starts from without onboarding; returns the API token."""
    storage = folder / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (folder / "configuration.yaml").write_text(f"""\
homeassistant:
  name: edge test
  latitude: 52.0
  longitude: 4.0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
http:
  server_host: 127.0.0.1
  server_port: {http_port}
api:
logger:
  default: info
""", encoding="utf-8")
    mqtt_entry = {"entry_id": uuid.uuid4().hex, "version": 1, "minor_version": 1, "domain": "mqtt",
                  "title": broker_host, "data": {"broker": broker_host, "port": broker_port, "discovery": True},
                  "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
                  "source": "user", "unique_id": None, "disabled_by": None}
    (storage / "core.config_entries").write_text(_storage("core.config_entries", {"entries": [mqtt_entry]}))
    user_id, refresh_id, jwt_key = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex * 2
    auth = {
        "users": [{"id": user_id, "group_ids": ["system-admin"], "is_owner": True, "is_active": True,
                   "name": "edge test", "system_generated": False, "local_only": False}],
        "groups": [{"id": "system-admin", "name": "Administrators"}, {"id": "system-users", "name": "Users"},
                   {"id": "system-read-only", "name": "Read Only"}],
        "credentials": [],
        "refresh_tokens": [{"id": refresh_id, "user_id": user_id, "client_id": None, "client_name": "edge tests",
                            "client_icon": None, "token_type": "long_lived_access_token",
                            "created_at": "2024-03-01T00:00:00+00:00", "access_token_expiration": 315360000.0,
                            "token": uuid.uuid4().hex * 4, "jwt_key": jwt_key, "last_used_at": None,
                            "last_used_ip": None, "expire_at": None, "credential_id": None,
                            "version": HA_VERSION}],
    }
    (storage / "auth").write_text(_storage("auth", auth))
    (storage / "auth").chmod(0o600)
    return access_token(refresh_id, jwt_key)


class HomeAssistant:
    """`hass` as a child process; its REST API; its log file."""

    def __init__(self, folder: Path, http_port: int, broker_host: str, broker_port: int,
                 python: Path | None = None):
        self.folder, self.port = folder, http_port
        self.python = python or ensure_venv()
        self.token = write_config(folder, http_port, broker_host, broker_port)
        self.process: subprocess.Popen | None = None
        self.log_file = folder / "home-assistant.log"
        self._out = None

    # --- the process ------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start and wait until the API answers and MQTT is connected (its config entry is loaded)."""
        self._out = open(self.folder / "stdout.log", "ab")
        argv = [str(self.python), "-m", "homeassistant", "--config", str(self.folder), "--skip-pip",
                "--log-file", str(self.log_file), "--log-no-color"]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                        stderr=subprocess.STDOUT, cwd=self.folder)
        self.wait_until(self._mqtt_loaded, timeout, "Home Assistant's API with MQTT loaded")

    def _mqtt_loaded(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Home Assistant exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            entries = self.api("GET", "config/config_entries/entry")
        except (OSError, urllib.error.URLError, RuntimeError):
            return False
        return any(e["domain"] == "mqtt" and e["state"] == "loaded" for e in entries)

    def stop(self, timeout: float = 60.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._out:
            self._out.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    # --- what it shows ---------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise RuntimeError(f"{method} /api/{path}: HTTP {err.code} {err.read()[:200]!r}") from None
        return payload if raw else json.loads(payload)

    def get_bytes(self, path: str) -> bytes:
        """A path Home Assistant serves (an image entity's `entity_picture`), with the token."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.api("GET", "states")}

    def state(self, entity_id: str) -> dict[str, Any] | None:
        return self.api("GET", f"states/{entity_id}")

    def entities_of(self, device_identifier: str) -> dict[str, dict[str, Any]]:
        """Entity registry entries (entity_id -> entry) of the device with this identifier, by a template."""
        template = ("{% set ns = namespace(ids=[]) %}{% for s in states %}"
                    "{% if ('mqtt', '" + device_identifier + "') in (device_attr(s.entity_id, 'identifiers') or []) %}"
                    "{% set ns.ids = ns.ids + [s.entity_id] %}{% endif %}{% endfor %}{{ ns.ids | tojson }}")
        ids = json.loads(self.api("POST", "template", {"template": template}, raw=True))
        return {entity_id: self.state(entity_id) for entity_id in ids}

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant: no {what} within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_state(self, entity_id: str, wanted: Callable[[str], bool] | str, timeout: float = 30.0
                   ) -> dict[str, Any]:
        test = wanted if callable(wanted) else (lambda state: state == wanted)

        def check() -> dict[str, Any] | None:
            state = self.state(entity_id)
            return state if state is not None and test(state["state"]) else None
        try:
            return self.wait_until(check, timeout, f"state wanted for {entity_id}")
        except AssertionError:
            raise AssertionError(f"{entity_id} is {self.state(entity_id)}, not as wanted\n{self.log_tail()}") \
                from None

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
