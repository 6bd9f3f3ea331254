"""Running as a service: `edge service install` into a temporary root filesystem, the unit checked by
systemd's own verifier, and the sd_notify protocol against a real AF_UNIX datagram socket standing
in for systemd."""
from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge.daemon import watchdog
from edge.service_install import (CONFIG_PATH, SYSUSERS_PATH, UNIT_PATH, WANTS_LINK, ServiceInstallError,
                                  UnitOptions, install)
from runtimes.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(shared_dir, tmp_path_factory) -> Path:
    from tests.edge.test_contract import convert_fp32

    return convert_fp32(shared_dir, ["PP-HumanSeg-Lite/pp_humanseg_lite_portrait_398x224/model.onnx"],
                        tmp_path_factory.mktemp("bundles") / "portrait")


TARGET_BUNDLE = "/opt/edge/bundles/portrait"      # where the bundle lies on the target system


def write_config(folder: Path, bundle_dir: Path, **changes: str) -> Path:
    """A config naming the bundle by its path on the target, FOLDER/root, where it is linked."""
    (folder / "in").mkdir(parents=True, exist_ok=True)
    on_target = folder / "root" / TARGET_BUNDLE.lstrip("/")
    if not on_target.exists():
        on_target.parent.mkdir(parents=True)
        on_target.symlink_to(bundle_dir)
    values = {"device_id": "cam-01", "state_dir": "/var/lib/edge/cam-01", "bundle": TARGET_BUNDLE,
              "source": str(folder / "in"), **changes}
    path = folder / "config.yaml"
    path.write_text(f"""\
device_id: {values['device_id']}
broker:
  url: mqtt://127.0.0.1:1883
state_dir: {values['state_dir']}
pipelines:
  - name: portrait
    bundle: {values['bundle']}
    source: {values['source']}
    rules:
      - name: someone
        type: presence
        label: person
""")
    return path


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    unit.optionxform = str          # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def options() -> UnitOptions:
    return UnitOptions(python=sys.executable)      # exists here, so systemd's verifier can check ExecStart


# ---- install -----------------------------------------------------------------------------------
def test_install_writes_unit_user_config_and_enable_link(tmp_path, bundle):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = write_config(tmp_path, bundle)
    report = install(config, root, options=options())
    assert [what for what, _ in report.actions] == ["wrote", "wrote", "wrote", "linked"]

    unit = read_unit(root / UNIT_PATH)
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == f"{sys.executable} -m edge run /etc/edge/config.yaml"
    assert service["Restart"] == "on-failure" and int(service["RestartSec"]) > 0
    assert int(service["WatchdogSec"]) > 0
    assert service["StateDirectory"] == "edge" and service["User"] == "edge"
    assert set(service["SupplementaryGroups"].split()) >= {"video", "dialout"}
    # hardening that would cut the daemon off from /dev/video* and /dev/tty* is absent
    assert not {"PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock"} & set(service)
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    installed = root / CONFIG_PATH
    assert installed.read_text() == config.read_text()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o640          # it may hold the broker password
    assert "u edge" in (root / SYSUSERS_PATH).read_text()
    assert os.readlink(root / WANTS_LINK) == "/etc/systemd/system/edge.service"
    assert not list((root / CONFIG_PATH.parent).glob(".config.*"))  # the staged copy used to check is gone


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_accepts_the_unit(tmp_path, bundle):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    install(write_config(tmp_path, bundle), root, options=options())
    verify = subprocess.run(["systemd-analyze", "verify", str(root / UNIT_PATH)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "Unknown" not in verify.stderr and "ignoring" not in verify.stderr, verify.stderr


def test_installing_twice_changes_nothing_and_a_different_unit_needs_force(tmp_path, bundle):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = write_config(tmp_path, bundle)
    install(config, root, options=options())
    again = install(config, root, options=options())
    assert {what for what, _ in again.actions} == {"unchanged"}

    unit_before = (root / UNIT_PATH).read_text()
    edited = write_config(tmp_path, bundle, device_id="cam-02")
    with pytest.raises(ServiceInstallError, match="--force"):
        install(edited, root, options=UnitOptions(python=sys.executable, watchdog_sec=90))
    # all or nothing: the refused install left the unit and the old config as they were
    assert (root / UNIT_PATH).read_text() == unit_before
    assert "cam-01" in (root / CONFIG_PATH).read_text()

    forced = install(edited, root, force=True, options=UnitOptions(python=sys.executable, watchdog_sec=90))
    assert ("wrote", root / UNIT_PATH) in forced.actions
    assert read_unit(root / UNIT_PATH)["Service"]["WatchdogSec"] == "90"
    assert "cam-02" in (root / CONFIG_PATH).read_text()


def test_an_invalid_config_is_refused_with_its_line_and_nothing_is_written(tmp_path, bundle):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = write_config(tmp_path, bundle)
    config.write_text(config.read_text().replace("label: person", "label: person\n        colour: red"))
    with pytest.raises(ConfigError) as err:
        install(config, root, options=options())
    # the user's file (not the copy staged to check it), a line, and the field
    assert re.match(rf"{re.escape(str(config))}:\d+: pipelines\.0\.rules\.0\..*colour", str(err.value)), err.value
    assert [p.name for p in root.iterdir()] == ["opt"]      # only the bundle this test put there


def test_a_state_dir_outside_the_service_state_folder_is_refused(tmp_path, bundle):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match="state_dir: .*outside /var/lib/edge"):
        install(write_config(tmp_path, bundle, state_dir=str(tmp_path / "state")), root, options=options())


def test_a_relative_bundle_path_is_checked_from_where_the_service_reads_the_config(tmp_path, bundle):
    # next to the user's config the path works; from ROOT/etc/edge it would not, so it is refused
    shutil.copytree(bundle, tmp_path / "portrait")
    config = write_config(tmp_path, bundle, bundle="portrait")
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match="bundle"):
        install(config, root, options=options())


@pytest.mark.parametrize("python", ["python3", "/usr/bin/python3\nExecStartPost=/bin/sh", '/opt/my "py"/bin/python'])
def test_the_python_path_must_be_absolute_and_plain(python):
    with pytest.raises(ServiceInstallError, match="--python"):
        UnitOptions(python=python).check()


def test_the_command_line(tmp_path, bundle):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = write_config(tmp_path, bundle)
    argv = [sys.executable, "-m", "edge", "service", "install", "--config", str(config), "--root", str(root),
            "--python", sys.executable]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"wrote     {root / UNIT_PATH}" in done.stdout
    (root / UNIT_PATH).write_text((root / UNIT_PATH).read_text() + "# local edit\n")
    refused = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]     # one line, no traceback
    assert "--force" in refused.stderr


# ---- sd_notify against a real datagram socket --------------------------------------------------
@pytest.fixture(params=["path", "abstract"])
def systemd_socket(request, tmp_path, monkeypatch):
    """A bound AF_UNIX datagram socket as systemd offers it, named in $NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
    else:
        name = f"edge-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_messages_reach_the_socket(systemd_socket):
    assert watchdog.ready(status="2 pipelines")
    assert received(systemd_socket) == "READY=1\nSTATUS=2 pipelines"
    assert watchdog.watchdog_ping()
    assert received(systemd_socket) == "WATCHDOG=1"
    assert watchdog.status("broker\naway")
    assert received(systemd_socket) == "STATUS=broker away"
    assert watchdog.stopping()
    assert received(systemd_socket) == "STOPPING=1"


def test_heartbeat_pings_at_half_the_watchdog_interval(systemd_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    now = [100.0]
    beat = watchdog.Heartbeat(clock=lambda: now[0])
    assert beat.period == 5.0
    pings = []
    for step in (0.0, 1.0, 3.9, 0.2, 4.0, 1.0):     # times at 100, 101, 104.9, 105.1, 109.1, 110.1
        now[0] += step
        pings.append(beat.beat())
    assert pings == [True, False, False, True, False, True]
    assert [received(systemd_socket) for _ in range(3)] == ["WATCHDOG=1"] * 3


def test_without_systemd_everything_is_a_quiet_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog.ready() is False and watchdog.watchdog_ping() is False
    assert watchdog.watchdog_interval() is None and watchdog.Heartbeat().beat() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))     # systemd's socket vanished
    assert watchdog.watchdog_ping() is False


@pytest.mark.parametrize("usec, pid, expected", [
    ("30000000", None, 30.0), ("30000000", "self", 30.0), ("30000000", "1", None),
    ("0", None, None), ("soon", None, None)])
def test_watchdog_interval_is_for_this_process_only(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert watchdog.watchdog_interval() == expected


def test_absolute_paths_are_checked_in_the_root_not_on_this_host(tmp_path, bundle):
    """The config names the bundle as the target sees it; the host has nothing at that path."""
    assert not Path(TARGET_BUNDLE).exists()
    root = tmp_path / "root"
    install(write_config(tmp_path, bundle), root, options=options())
    assert f"bundle: {TARGET_BUNDLE}" in (root / CONFIG_PATH).read_text()
    # and a host path that the root lacks is refused, naming where it looked
    with pytest.raises(ConfigError, match=f"bundle folder {root}{bundle} does not exist"):
        install(write_config(tmp_path, bundle, bundle=str(bundle)), root, force=True, options=options())
