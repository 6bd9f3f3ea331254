"""`edge service install`: the daemon as a systemd service, written into a root filesystem.

ROOT is the running system ("/") or a mounted SD-card image's root: nothing here runs systemctl
or touches the host outside ROOT, so an image can be prepared on another machine. What it writes:

- ROOT/etc/systemd/system/edge.service: `Type=notify` (the daemon says READY=1 once its pipelines
  are open), restart on failure, a watchdog the daemon pings from its main loop, its state in
  /var/lib/edge (StateDirectory=), run as the dedicated user `edge` with the groups that own
  cameras and serial ports, and sandboxing that leaves /dev alone;
- ROOT/etc/sysusers.d/edge.conf: the `edge` user (systemd-sysusers creates it at boot);
- ROOT/etc/edge/config.yaml: the validated config (mode 0640: it may hold the broker password);
- ROOT/etc/systemd/system/multi-user.target.wants/edge.service: the link `systemctl enable` makes.

A different existing unit or config is never overwritten without `force`; identical files are
left as they are, so installing twice is harmless.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from runtimes.errors import ConfigError, EdgeError
from runtimes.yamlconfig import read_yaml

UNIT_NAME = "edge.service"
UNIT_PATH = Path("etc/systemd/system") / UNIT_NAME
WANTS_LINK = Path("etc/systemd/system/multi-user.target.wants") / UNIT_NAME
CONFIG_PATH = Path("etc/edge/config.yaml")
SYSUSERS_PATH = Path("etc/sysusers.d/edge.conf")
SERVICE_USER = "edge"
DEVICE_GROUPS = ("video", "dialout")      # V4L2 cameras and serial ports belong to these on Debian/Raspberry Pi OS
IMAGE_PYTHON = "/usr/bin/python3"
STATE_DIR = Path("/var/lib/edge")           # StateDirectory=edge: created for and owned by the service user

# Sandboxing chosen so cameras and serial ports keep working: no PrivateDevices=, DeviceAllow= or
# ProtectClock= (the last implies DeviceAllow=char-rtc on older systemd, which blocks every other
# device), and no MemoryDenyWriteExecute= (inference runtimes may generate code at run time).
HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0027
"""


class ServiceInstallError(EdgeError):
    """The service cannot be installed as asked (existing files differ, bad option)."""


@dataclass
class UnitOptions:
    python: str                      # the interpreter on the target system, absolute
    watchdog_sec: int = 60
    restart_sec: int = 5
    stop_timeout_sec: int = 30       # the daemon waits up to its drain timeout (10 s) for acks

    def check(self) -> None:
        if not self.python.startswith("/") or any(c in self.python for c in "\n\r\"\\"):
            raise ServiceInstallError(f"--python must be an absolute path on the target system, got {self.python!r}")
        for name in ("watchdog_sec", "restart_sec", "stop_timeout_sec"):
            if not 1 <= getattr(self, name) <= 3600:
                raise ServiceInstallError(f"{name.replace('_', '-')} must be 1-3600 seconds")


def render_unit(options: UnitOptions) -> str:
    options.check()
    python = f'"{options.python}"' if " " in options.python else options.python
    return f"""\
# Written by `edge service install`; reinstall with --force rather than editing (or use a drop-in).
[Unit]
Description=edge: vision models on this device, results over MQTT
After=network-online.target
Wants=network-online.target
# Keep trying for as long as the device runs: a broker or camera may take a while to come back.
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStartPre=+/bin/chgrp {SERVICE_USER} /{CONFIG_PATH}
ExecStart={python} -m edge run /{CONFIG_PATH}
Restart=on-failure
RestartSec={options.restart_sec}
WatchdogSec={options.watchdog_sec}
TimeoutStopSec={options.stop_timeout_sec}
User={SERVICE_USER}
Group={SERVICE_USER}
SupplementaryGroups={' '.join(DEVICE_GROUPS)}
StateDirectory=edge
StateDirectoryMode=0750
WorkingDirectory={STATE_DIR}
Environment=PYTHONUNBUFFERED=1
{HARDENING}
[Install]
WantedBy=multi-user.target
"""


def render_sysusers() -> str:
    lines = [f'u {SERVICE_USER} - "edge daemon" {STATE_DIR}']
    lines += [f"m {SERVICE_USER} {group}" for group in DEVICE_GROUPS]
    return "# Written by `edge service install`: the user the edge service runs as.\n" + "\n".join(lines) + "\n"


def _daemon_config_loader():
    """The daemon's own config check (file, line and field in every error); None before it exists."""
    try:
        from .daemon import config as daemon_config
    except ImportError:
        return None
    return getattr(daemon_config, "load_daemon_config", None)


def check_config(text: str, source: Path, root: Path) -> None:
    """Validate the config as it will be read on the target: from ROOT/etc/edge, so that relative
    paths in it resolve as the service will resolve them, and with its absolute paths under ROOT
    (/opt/edge/bundles/x of the config is ROOT/opt/edge/bundles/x here); its state_dir must be the
    service's state folder, the only place the sandbox lets the daemon write."""
    loader = _daemon_config_loader()
    folder = root / CONFIG_PATH.parent
    created = [p for p in (folder, *folder.parents) if p.is_relative_to(root) and not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=".config.", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        if loader is None:
            data, _node = read_yaml(staged)
            if not isinstance(data, dict):
                raise ConfigError("expected a mapping at the top level", path=str(source), line=1)
            return
        try:
            config = loader(staged, root=root)
        except ConfigError as err:
            # name the file the user gave, not the staged copy
            raise ConfigError(str(err).replace(staged, str(source))) from None
    finally:
        Path(staged).unlink(missing_ok=True)
        for made in created:             # deepest first: leave ROOT as it was found
            if not any(made.iterdir()):
                made.rmdir()
    state_dir = getattr(config, "state_dir", None)
    if state_dir is not None and not _on_target(Path(state_dir), root).is_relative_to(STATE_DIR):
        raise ConfigError(f"{state_dir} is outside {STATE_DIR}, the only folder the service may write to "
                          "(StateDirectory=edge)", path=str(source), field="state_dir")


def _on_target(path: Path, root: Path) -> Path:
    root = root.resolve()
    path = path.resolve()
    return Path("/") / path.relative_to(root) if root != Path("/") and path.is_relative_to(root) else path


@dataclass
class InstallReport:
    root: Path
    actions: list[tuple[str, Path]] = field(default_factory=list)    # ("wrote" | "unchanged" | "linked", path)

    def lines(self) -> list[str]:
        return [f"{what:9} {path}" for what, path in self.actions]


def default_python(root: Path) -> str:
    """This interpreter when installing into the running system, else the image's system python."""
    return sys.executable if root.resolve() == Path("/") else IMAGE_PYTHON


def install(config: Path, root: Path = Path("/"), *, force: bool = False, enable: bool = True,
            options: UnitOptions | None = None) -> InstallReport:
    """Validate `config`, then write the unit, the user and the config under `root` (all or nothing)."""
    config, root = Path(config), Path(root)
    if not root.is_dir():
        raise ServiceInstallError(f"root folder {root} {'is not a folder' if root.exists() else 'does not exist'}")
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"cannot read the config ({reason})", path=str(config)) from None
    try:
        return _install(text, config, root, force, enable, options)
    except OSError as err:      # a read-only image, a file where a folder of the unit must go, ...
        raise ServiceInstallError(f"cannot write into {root}: {err.strerror or err}"
                                  f"{f' ({err.filename})' if err.filename else ''}") from None


def _install(text: str, config: Path, root: Path, force: bool, enable: bool,
             options: UnitOptions | None) -> InstallReport:
    check_config(text, config, root)
    options = options or UnitOptions(python=default_python(root))
    files = {UNIT_PATH: (render_unit(options), 0o644),
             SYSUSERS_PATH: (render_sysusers(), 0o644),
             CONFIG_PATH: (text, 0o640)}
    existing = {rel: _read(root / rel) for rel in files}
    clashes = [rel for rel, (content, _mode) in files.items() if existing[rel] not in (None, content)]
    if clashes and not force:
        names = ", ".join(str(root / rel) for rel in clashes)
        raise ServiceInstallError(f"{names} already exist(s) with different content; use --force to replace")
    report = InstallReport(root)
    for rel, (content, mode) in files.items():
        if existing[rel] == content:
            report.actions.append(("unchanged", root / rel))
        else:
            _write_atomically(root / rel, content, mode)
            report.actions.append(("wrote", root / rel))
    if enable:
        report.actions.append(_enable(root))
    return report


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, text: str, mode: int) -> None:
    # a reader (systemd, a crashed install) sees the old file or the new one, never half of one
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _enable(root: Path) -> tuple[str, Path]:
    """What `systemctl enable` does, done in ROOT: a link to the unit's path as the target system sees it."""
    link = root / WANTS_LINK
    target = Path("/") / UNIT_PATH
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return "unchanged", link
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
    return "linked", link
