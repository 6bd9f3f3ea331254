"""`edge deploy PKG --ssh user@127.0.0.1:PORT` against a real OpenSSH server the test starts (its own host key,
key authentication only). The device is this machine: its python runs `edge deploy --rootfs` into a test root,
and the restart command (no systemd here) leaves a mark that shows it ran, after the install. Failures are one
line each: key refused, host down, no space (a real ENOSPC on a tiny tmpfs), an error on the device."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .deploy_support import Sshd, edge_cli, free_port, signed_package


@pytest.fixture(scope="module")
def signed(shared_dir, tmp_path_factory):
    return signed_package(shared_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def device(tmp_path) -> Path:
    root = tmp_path / "device-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("shelf-cam\n")
    (tmp_path / "remote-tmp").mkdir()
    return root


def deploy_over_ssh(capsys, signed, sshd: Sshd, device: Path, identity: Path | None = None,
                    destination: str | None = None, remote_tmp: Path | None = None, remote_root: Path | None = None):
    marker = device / "restarted.log"
    restart = f"test -L {shlex.quote(str(device))}/opt/edge/bundles/portrait/current && echo restarted >> " \
              f"{shlex.quote(str(marker))}"
    return edge_cli(capsys, "deploy", str(signed.package), "--ssh", destination or sshd.destination,
                    "--trusted", str(signed.operator.public_path),
                    "--ssh-config", str(sshd.client_config(identity or sshd.client_key)),
                    "--remote-python", sys.executable, "--remote-root", str(remote_root or device),
                    "--remote-tmp", str(remote_tmp or device.parent / "remote-tmp"),
                    "--restart-command", restart, "--mqtt", "mqtt://broker.lan:1883")


def test_deploy_over_ssh_installs_on_the_device_and_restarts(capsys, signed, sshd, device):
    done = deploy_over_ssh(capsys, signed, sshd, device)
    assert done.returncode == 0, done.stderr

    bundle = device / "opt/edge/bundles/portrait"
    assert os.readlink(bundle / "current") == "1.0.0" and (bundle / "1.0.0/manifest.json").is_file()
    config = (device / "etc/edge/config.yaml").read_text()
    assert "device_id: shelf-cam" in config and "mqtt://broker.lan:1883" in config     # the device's hostname
    assert (device / "etc/systemd/system/multi-user.target.wants/edge.service").is_symlink()
    assert (device / f"etc/edge/trusted-keys/{signed.operator.id}.pub").read_text() == \
        signed.operator.public_path.read_text()
    assert (device / "restarted.log").read_text() == "restarted\n"      # ran once, after `current` existed
    assert not list((device.parent / "remote-tmp").iterdir())           # the uploaded copy is cleaned up
    assert f"{sshd.destination}: restarted" in done.stdout


def test_a_key_the_device_does_not_accept_is_one_line(capsys, signed, sshd, device):
    refused = deploy_over_ssh(capsys, signed, sshd, device, identity=sshd.wrong_key)
    assert "refused our ssh key" in refused.error()
    assert not (device / "opt").exists()


def test_a_device_that_is_down_is_one_line(capsys, signed, sshd, device):
    closed = free_port()
    down = deploy_over_ssh(capsys, signed, sshd, device, destination=f"{sshd.user}@127.0.0.1:{closed}")
    assert f"cannot reach {sshd.user}@127.0.0.1:{closed}: connection refused" in down.error()


def test_an_error_on_the_device_comes_back_as_one_line(capsys, signed, sshd, device, tmp_path):
    failed = deploy_over_ssh(capsys, signed, sshd, device, remote_root=tmp_path / "no-such-root")
    line = failed.error()
    assert f"{sshd.destination}: edge deploy: error: root filesystem {tmp_path / 'no-such-root'} does not exist" \
        in line
    assert not (device / "restarted.log").exists()                       # no restart after a failed install


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 KiB filesystem, so the upload meets a real ENOSPC (needs root: mount)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the no-space case needs root")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_no_space_on_the_device_is_one_line_and_installs_nothing(capsys, signed, sshd, device, tiny_tmpfs):
    full = deploy_over_ssh(capsys, signed, sshd, device, remote_tmp=tiny_tmpfs)
    assert "no space left on the device while receiving portrait.edgepkg; nothing was installed" in full.error()
    assert not (device / "opt").exists() and not (device / "restarted.log").exists()
    assert not list(tiny_tmpfs.iterdir())                                # the partial upload is removed
