"""`edge deploy PKG --rootfs DIR` into a temporary root filesystem, with a real signed package: the bundle under
/opt/edge/bundles/<name>/<version> with a relative `current` link, the daemon config the daemon's own loader
accepts, the unit enabled, the sysusers entry and the trusted key. A refused package changes nothing."""
from __future__ import annotations

import configparser
import hashlib
import os
from pathlib import Path

import pytest

from edge.daemon.config import load_daemon_config
from edge.packaging import build_package, generate, load_trusted, verify_package
from runtimes.bundle import Bundle

from .deploy_support import edge_cli, signed_package

BUNDLES = Path("opt/edge/bundles/portrait")


@pytest.fixture(scope="module")
def signed(shared_dir, tmp_path_factory):
    return signed_package(shared_dir, tmp_path_factory)


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("pi-cam-3\n")
    return root


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): (f"-> {os.readlink(p)}" if p.is_symlink() else
                                             hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def deploy(capsys):
    def run(package: Path, root: Path, key: Path, *extra: str):
        return edge_cli(capsys, "deploy", str(package), "--rootfs", str(root), "--trusted", str(key), *extra)
    return run


def test_deploy_installs_bundle_link_config_unit_user_and_trusted_key(signed, root, deploy):
    done = deploy(signed.package, root, signed.operator.public_path, "--mqtt", "mqtt://broker.lan:1883")
    assert done.returncode == 0, done.stderr

    version = root / BUNDLES / "1.0.0"
    assert Bundle.open(version, verify=True).manifest.pipeline
    assert os.readlink(root / BUNDLES / "current") == "1.0.0"            # relative: right inside and outside ROOT

    config = load_daemon_config(root / "etc/edge/config.yaml", root=root)   # the daemon's own check, on the target
    assert config.device_id == "pi-cam-3"                                   # the target's hostname
    assert config.broker.url == "mqtt://broker.lan:1883"
    assert config.pipelines[0].bundle == (root / BUNDLES / "current").resolve().parent / "current"
    assert "/opt/edge/bundles/portrait/current" in (root / "etc/edge/config.yaml").read_text()
    assert str(config.state_dir).startswith(str(root / "var/lib/edge"))
    assert (root / "var/lib/edge/incoming").is_dir()                       # the default folder source exists

    unit = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    unit.optionxform = str
    unit.read_string((root / "etc/systemd/system/edge.service").read_text())
    assert unit["Service"]["ExecStart"] == "/usr/bin/python3 -m edge run /etc/edge/config.yaml"
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/edge.service") == \
        "/etc/systemd/system/edge.service"
    assert (root / "etc/sysusers.d/edge.conf").read_text().count("u edge") == 1

    trusted_dir = root / "etc/edge/trusted-keys"
    assert list(load_trusted([trusted_dir])) == [signed.operator.id]
    assert verify_package(signed.package, [trusted_dir]).key_id == signed.operator.id   # the device trusts it
    assert f"installed {version}" in " ".join(done.stdout.split())


def test_a_new_version_moves_current_and_keeps_the_config(signed, root, deploy, tmp_path):
    first = deploy(signed.package, root, signed.operator.public_path, "--device-id", "door")
    assert first.returncode == 0, first.stderr
    config_before = (root / "etc/edge/config.yaml").read_text()
    second_pkg = tmp_path / "portrait-2.edgepkg"
    build_package(signed.bundle, second_pkg, signed.operator, name="portrait", version="2.0.0")

    second = deploy(second_pkg, root, signed.operator.public_path)
    assert second.returncode == 0, second.stderr
    assert os.readlink(root / BUNDLES / "current") == "2.0.0"
    assert (root / BUNDLES / "1.0.0" / "manifest.json").is_file()           # the previous version stays
    assert (root / "etc/edge/config.yaml").read_text() == config_before     # device id "door" kept
    assert "unchanged" in second.stdout
    again = deploy(second_pkg, root, signed.operator.public_path)           # the same package again: harmless
    assert again.returncode == 0, again.stderr
    assert not [p for p in (root / BUNDLES).iterdir() if p.name.startswith(".")]    # no staging leftovers


def test_a_different_config_needs_force_and_leaves_current_where_it_was(signed, root, deploy, tmp_path):
    assert deploy(signed.package, root, signed.operator.public_path, "--mqtt", "mqtt://a.lan").returncode == 0
    second_pkg = tmp_path / "portrait-2.edgepkg"
    build_package(signed.bundle, second_pkg, signed.operator, name="portrait", version="2.0.0")

    refused = deploy(second_pkg, root, signed.operator.public_path, "--mqtt", "mqtt://b.lan")
    assert "use --force" in refused.error()
    assert os.readlink(root / BUNDLES / "current") == "1.0.0"
    assert "mqtt://a.lan" in (root / "etc/edge/config.yaml").read_text()

    forced = deploy(second_pkg, root, signed.operator.public_path, "--mqtt", "mqtt://b.lan", "--force")
    assert forced.returncode == 0, forced.stderr
    assert os.readlink(root / BUNDLES / "current") == "2.0.0"
    assert "mqtt://b.lan" in (root / "etc/edge/config.yaml").read_text()


def test_a_package_signed_by_another_key_changes_nothing(signed, root, deploy, tmp_path):
    assert deploy(signed.package, root, signed.operator.public_path).returncode == 0
    before = tree(root)
    foreign = tmp_path / "foreign.edgepkg"
    build_package(signed.bundle, foreign, signed.stranger, name="portrait", version="6.6.6")

    refused = deploy(foreign, root, signed.operator.public_path)
    assert "does not trust" in refused.error()
    assert tree(root) == before


def test_without_trusted_the_operators_own_key_is_trusted(signed, root, tmp_path, capsys, monkeypatch):
    keys = tmp_path / "my-keys"
    monkeypatch.setenv("EDGE_KEYS_DIR", str(keys))
    missing = edge_cli(capsys, "deploy", str(signed.package), "--rootfs", str(root))
    assert "edge keys generate" in missing.error()

    mine = generate("default", keys)
    package = tmp_path / "mine.edgepkg"
    build_package(signed.bundle, package, mine, name="portrait", version="3.0.0")
    done = edge_cli(capsys, "deploy", str(package), "--rootfs", str(root))
    assert done.returncode == 0, done.stderr
    assert (root / "etc/edge/trusted-keys" / f"{mine.id}.pub").read_text() == mine.public_path.read_text()


def test_a_bad_setting_names_its_flag_and_leaves_the_root_as_it_was(signed, root, deploy):
    before = tree(root)
    refused = deploy(signed.package, root, signed.operator.public_path, "--mqtt", "http://broker.lan")
    assert "edge deploy: error: --mqtt: 'http://broker.lan': broker URL must start with mqtt://" in refused.error()
    assert tree(root) == before
    refused = deploy(signed.package, root, signed.operator.public_path, "--device-id", "cam/1")
    assert refused.error().startswith("edge deploy: error: --device-id: 'cam/1' is not a usable device id")
    assert tree(root) == before


def test_a_missing_root_is_one_line(signed, deploy, tmp_path):
    missing = deploy(signed.package, tmp_path / "nowhere", signed.operator.public_path)
    assert "does not exist" in missing.error()
