"""`edge deploy PKG --ssh user@host[:port]`: a running device, through the system's OpenSSH client.

Steps, each one line of progress: verify here against the trusted key; make a private folder on the
device (`mktemp -d` in --remote-tmp); send the package and the key into it over the ssh channel; on the
device, `edge deploy --rootfs /` (the device's own edge verifies the signature and every hash against
the key, then installs: the same steps as a mounted root filesystem); run the restart command; remove
the folder. Key authentication only
(BatchMode: never a password prompt). ssh's failures become one line each: key refused, host down,
host key changed, no space.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .request import DeployError, DeployRequest, Say, verify_for_target

FLAG = "--ssh"
DEVICE_PYTHON = "/opt/edge/venv/bin/python"          # where `edge deploy --image` installs edge
RESTART = "systemd-sysusers && systemctl daemon-reload && systemctl restart edge.service"
CONNECT_TIMEOUT_S = 10
PROGRESS_MIN_BYTES, PROGRESS_STEP = 8 << 20, 0.25      # a line per quarter of an upload of 8 MB or more


@dataclass
class Options:
    user: str | None
    host: str
    port: int = 22
    identity: Path | None = None
    ssh_config: Path | None = None
    remote_python: str = DEVICE_PYTHON
    remote_root: str = "/"
    remote_tmp: str = "/var/tmp"
    restart_command: str = RESTART

    @property
    def target(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def parse_destination(text: str) -> tuple[str | None, str, int]:
    match = re.fullmatch(r"(?:([^@\s:]+)@)?(\[[0-9A-Fa-f:.]+\]|[^@\s:\[\]]+)(?::(\d{1,5}))?", text)
    if not match or (match.group(3) and not 0 < int(match.group(3)) < 65536):
        raise DeployError(f"--ssh {text!r}: expected USER@HOST or USER@HOST:PORT")
    return match.group(1), match.group(2).strip("[]"), int(match.group(3) or 22)


def add_arguments(group) -> None:
    group.add_argument("--identity", type=Path, help="ssh private key (default: ssh's own choice)")
    group.add_argument("--ssh-config", type=Path, help="an ssh_config file (ssh -F)")
    group.add_argument("--remote-python", default=DEVICE_PYTHON,
                       help=f"the python with edge on the device (default {DEVICE_PYTHON})")
    group.add_argument("--remote-root", default="/", help="root filesystem on the device to install into (default /)")
    group.add_argument("--remote-tmp", default="/var/tmp", help="where the package waits on the device (default "
                                                                "/var/tmp)")
    group.add_argument("--restart-command", default=RESTART,
                       help=f"shell command run on the device after the install (default: {RESTART})")


def options_from_args(args) -> Options:
    user, host, port = parse_destination(args.ssh)
    return Options(user, host, port, args.identity, args.ssh_config, args.remote_python, args.remote_root,
                   args.remote_tmp, args.restart_command)


class Session:
    """ssh commands to one device over one shared connection (ssh's ControlMaster: one handshake, not one
    per step); every ssh failure becomes one DeployError line. Use as a context manager."""

    def __init__(self, options: Options):
        if shutil.which("ssh") is None:
            raise DeployError("the OpenSSH client is needed for --ssh (Debian: apt install openssh-client)")
        self.options = options
        self.control = tempfile.TemporaryDirectory(prefix="edge-ssh-")      # short path: sockets allow ~100 bytes
        argv = ["ssh", "-p", str(options.port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control.name}/master",
                "-o", "ControlPersist=60"]
        if options.ssh_config:
            argv += ["-F", str(options.ssh_config)]
        if options.identity:
            argv += ["-i", str(options.identity), "-o", "IdentitiesOnly=yes"]
        self.destination = f"{options.user}@{options.host}" if options.user else options.host
        self.base = argv

    @property
    def argv(self) -> list[str]:
        return self.base + [self.destination, "--"]

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(self.base + ["-O", "exit", self.destination], capture_output=True)
        self.control.cleanup()

    def run(self, command: str, what: str) -> str:
        proc = subprocess.run(self.argv + [command], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DeployError(self.explain(proc.returncode, proc.stderr, what))
        return proc.stdout

    def send(self, local: Path, remote: str, say: Say) -> None:
        """LOCAL into the file REMOTE through the ssh channel (`cat >` there), with progress for big files."""
        what, size = f"receiving {local.name}", local.stat().st_size
        proc = subprocess.Popen(self.argv + [f"cat > {shlex.quote(remote)}"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sent, next_report = 0, PROGRESS_STEP
        try:
            with open(local, "rb") as fh:
                while block := fh.read(1 << 20):
                    proc.stdin.write(block)
                    sent += len(block)
                    if size >= PROGRESS_MIN_BYTES and sent >= next_report * size:
                        say(f"sent {sent / 1e6:.1f} of {size / 1e6:.1f} MB")
                        next_report += PROGRESS_STEP
        except BrokenPipeError:
            pass                                    # the device stopped reading: its message says why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        stderr = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise DeployError(self.explain(proc.returncode, stderr, what))

    def explain(self, code: int, stderr: str, what: str) -> str:
        target, lines = self.options.target, [l.strip() for l in stderr.splitlines() if l.strip()]
        text = " ".join(lines)
        if "Permission denied" in text and code == 255:
            return (f"{target}: the device refused our ssh key (Permission denied); give --identity KEY, or add "
                    "your public key to the device's authorized_keys")
        if "Host key verification failed" in text or "IDENTIFICATION HAS CHANGED" in text:
            return (f"{target}: the device's ssh host key is unknown or changed (Host key verification failed); "
                    "check it, then add it to known_hosts")
        for cause in ("Connection refused", "Connection timed out", "No route to host", "Could not resolve hostname",
                      "Network is unreachable"):
            if cause in text:
                return f"cannot reach {target}: {cause.lower()} (device off, wrong address or port, or no sshd)"
        if "No space left on device" in text:
            return f"{target}: no space left on the device while {what}; nothing was installed"
        errors = [l for l in lines if re.match(r"edge [\w-]+: error: ", l)]
        if errors:
            return f"{target}: {errors[-1]}"
        if code == 127:
            return f"{target}: command not found while {what} ({lines[-1] if lines else ''}); is edge installed " \
                   "there? (--remote-python)"
        return f"{target}: {what} failed (exit {code}): {lines[-1] if lines else 'no message'}"


def deploy(request: DeployRequest, options: Options, say: Say) -> list[str]:
    verified = verify_for_target(request)
    say(f"verified {request.package.name}: {verified.manifest.name} {verified.manifest.version}, signed by "
        f"trusted key {verified.key_id}")
    with Session(options) as session:
        return _deploy(session, request, options, say)


def _deploy(session: Session, request: DeployRequest, options: Options, say: Say) -> list[str]:
    q = shlex.quote
    folder = session.run(f"mktemp -d {q(options.remote_tmp.rstrip('/') + '/edge-deploy.XXXXXX')}",
                         "making a folder for the package").strip()
    say(f"connected to {options.target}; sending {request.package.stat().st_size / 1e6:.1f} MB to {folder}")
    pkg, key = f"{folder}/{request.package.name}", f"{folder}/trusted.pub"
    try:
        session.send(request.package, pkg, say)
        session.send(request.trusted_key, key, say)
        say(f"on the device: edge deploy --rootfs {options.remote_root} (it verifies the package first)")
        installed = session.run(request.device_command(options.remote_python, pkg, key, options.remote_root),
                                "installing on the device")
        say(f"restarting: {options.restart_command}")
        session.run(options.restart_command, "restarting the service")
    finally:
        try:
            session.run(f"rm -rf {q(folder)}", "cleaning up")
        except DeployError as err:
            say(f"warning: {err}")
    return [f"{options.target}: {line}" for line in installed.splitlines()] + \
        [f"{options.target}: restarted ({options.restart_command})"]
