"""`edge deploy PKG --rootfs DIR`: install into a root filesystem (a mounted SD card, or / on the device).

What lands under DIR, in this order (each step only after the one before succeeded):
1. the bundle in /opt/edge/bundles/<name>/<version> (`install_package`: signature and every hash first);
2. /opt/edge/bundles/<name>/current, a relative link to <version>, renamed into place in one step;
3. the daemon config, the systemd unit with its multi-user.target.wants link and the sysusers entry
   (`edge.service_install`, which checks the config against the target first). If this is refused,
   `current` goes back to where it pointed and a version folder this deploy made is removed;
4. the trusted public key in /etc/edge/trusted-keys/<key id>.pub.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtimes.errors import ConfigError

from ..ota.slots import sync_dir
from ..packaging.install import install_package
from ..service_install import CONFIG_PATH, UnitOptions, default_python, install as install_service
from . import daemon_config
from .request import DeployError, DeployRequest, Say, trusted_key_id

FLAG = "--rootfs"
TRUSTED_KEYS_DIR = Path("etc/edge/trusted-keys")


@dataclass
class Options:
    root: Path


def add_arguments(group) -> None:
    """--rootfs takes no options of its own."""


def options_from_args(args) -> Options:
    return Options(root=Path(args.rootfs))


def switch_current(version_dir: Path) -> str | None:
    """Point `current` beside `version_dir` at it (relative, atomic); returns where it pointed before."""
    link = version_dir.parent / "current"
    before = os.readlink(link) if link.is_symlink() else None
    if link.exists() and not link.is_symlink():
        raise DeployError(f"{link} exists and is not a link; move it away")
    set_link(link, version_dir.name)
    return before


def set_link(link: Path, target: str) -> None:
    staged = link.with_name(f".current.{os.getpid()}")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)
    sync_dir(link.parent)


def _restore(link: Path, before: str | None) -> None:
    if before is None:
        link.unlink(missing_ok=True)
    else:
        set_link(link, before)


def install_trusted_key(root: Path, key_file: Path, key: str) -> tuple[str, Path]:
    dest = root / TRUSTED_KEYS_DIR / f"{key}.pub"
    text = key_file.read_text(encoding="utf-8")
    if dest.is_file() and dest.read_text(encoding="utf-8") == text:
        return "unchanged", dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f".{dest.name}.{os.getpid()}")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, dest)
    return "wrote", dest


def _config_text(root: Path, request: DeployRequest, bundle_name: str, say: Say) -> str:
    existing = root / CONFIG_PATH
    if existing.is_file() and not request.sets_config:
        text = existing.read_text(encoding="utf-8")
        if str(daemon_config.current_link(bundle_name)) not in text:
            say(f"note: the existing {existing} does not name {daemon_config.current_link(bundle_name)}; "
                "it is kept (pass --mqtt/--device-id/--source with --force to write a new one)")
        return text
    device_id = request.device_id or daemon_config.device_id_from_hostname(root)
    return daemon_config.render(bundle_name, device_id, request.mqtt, request.source)


# the flag a field of the config we write comes from, to name it in an error instead of a temporary file
FIELD_FLAGS = {"broker.url": "--mqtt", "device_id": "--device-id", "pipelines.0.source": "--source"}


def _install_service(root: Path, request: DeployRequest, text: str):
    with tempfile.TemporaryDirectory(prefix="edge-deploy-") as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(text, encoding="utf-8")
        options = UnitOptions(python=request.python or default_python(root))
        try:
            return install_service(config, root, force=request.force, options=options)
        except ConfigError as err:
            where = re.match(rf"{re.escape(str(config))}:\d+: ([\w.]+): (.*)", str(err))
            if where is None:
                raise
            flag = FIELD_FLAGS.get(where.group(1), where.group(1))
            raise DeployError(f"{flag}: {where.group(2).removeprefix('Value error, ')}") from None


def _undo(installed: Path, was_there: bool, link: Path, before: str | None, made: list[Path]) -> None:
    """After a refused config: `current` where it was, and what this deploy made removed."""
    _restore(link, before)
    if not was_there:
        shutil.rmtree(installed, ignore_errors=True)
    for folder in [installed.parent, *made]:        # deepest first, and only when empty
        try:
            folder.rmdir()
        except OSError:
            pass


def deploy(request: DeployRequest, options: Options, say: Say) -> list[str]:
    root = options.root
    if not root.is_dir():
        raise DeployError(f"root filesystem {root} {'is not a folder' if root.exists() else 'does not exist'}")
    key = trusted_key_id(request)
    bundles = root / daemon_config.BUNDLES_DIR.relative_to("/")
    say(f"verifying {request.package} against trusted key {key}, then installing into {root}")
    there_before = set(bundles.glob("*/*"))
    made = [f for f in (bundles, bundles.parent, bundles.parent.parent) if not f.exists()]
    installed = install_package(request.package, bundles, [request.trusted_key])
    link = installed.parent / "current"
    before = switch_current(installed)
    text = _config_text(root, request, installed.parent.name, say)
    try:
        report = _install_service(root, request, text)
    except BaseException:
        _undo(installed, installed in there_before, link, before, made)
        raise
    if daemon_config.uses_default_source(text):     # the folder must exist when the daemon opens it
        (root / daemon_config.DEFAULT_SOURCE.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return [f"{'installed':9} {installed}", f"{'linked':9} {link} -> {installed.name}",
            "{:9} {}".format(*install_trusted_key(root, request.trusted_key, key)), *report.lines()]
