"""A network that really goes away: a network namespace joined to this one by a veth pair.

    with NetnsLink() as link:
        subprocess.Popen([*link.exec_prefix, "python", ...])    # runs inside, reaches us at link.host_ip
        link.cut()       # the far end of its cable goes dark: its packets vanish, nothing is reset
        link.restore()

A process inside sees only its own loopback and the veth end `link.ns_ip`; a server here that listens on
`link.host_ip` is reachable from inside. Cutting sets our end down: the inside end loses its carrier and
its packets are dropped without an error, as when a switch or a radio link upstream fails, so a TCP
connection across it is never reset and only a keepalive notices. The addresses are a random /30 of
10.214.0.0/16, existing only on this pair. Everything is removed on exit, whatever happened.
Needs root and iproute2 (`ip`).
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid

SUBNET_PREFIX = "10.214"
LINK_UP_TIMEOUT_S = 10.0


class NetnsError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why a NetnsLink cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the 'ip' command is missing: apt-get install iproute2"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _free_subnet() -> tuple[str, str]:
    """(our address, the namespace's address) of a /30 no interface here uses."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for _ in range(100):
        third, fourth = random.randrange(256), random.randrange(0, 256, 4)
        host, inside = f"{SUBNET_PREFIX}.{third}.{fourth + 1}", f"{SUBNET_PREFIX}.{third}.{fourth + 2}"
        if f" {host}/" not in used and f" {inside}/" not in used:
            return host, inside
    raise NetnsError(f"no free /30 in {SUBNET_PREFIX}.0.0/16")


class NetnsLink:
    """A namespace `name` and a veth pair: `host_if` (here, `host_ip`) and `ns_if` (inside, `ns_ip`)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name = f"edge-{tag}"
        self.host_if, self.ns_if = f"eh{tag}", f"en{tag}"     # interface names: at most 15 characters
        self.host_ip = self.ns_ip = ""                         # chosen on entering

    @property
    def exec_prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> "NetnsLink":
        reason = unavailable_reason()
        if reason:
            raise NetnsError(reason)
        self.host_ip, self.ns_ip = _free_subnet()
        try:
            self._create()
        except BaseException:
            self._remove()
            raise
        return self

    def _create(self) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        inside = ("-n", self.name)
        _ip(*inside, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        _ip(*inside, "link", "set", self.ns_if, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def cut(self) -> None:
        """Our end down: from now on nothing crosses, and nobody is told."""
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        """Our end up again; returns once both ends are up and would resolve each other afresh."""
        _ip("link", "set", self.host_if, "up")
        # Address lookups that failed during the cut would hold the first packets back for a second or more.
        _ip("neigh", "flush", "dev", self.host_if, check=False)
        _ip("-n", self.name, "neigh", "flush", "dev", self.ns_if, check=False)
        deadline = time.monotonic() + LINK_UP_TIMEOUT_S
        while not (self._up(self.host_if) and self._up(self.ns_if, "-n", self.name)):
            if time.monotonic() > deadline:
                raise NetnsError(f"the link {self.host_if} did not come up within {LINK_UP_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    @staticmethod
    def _up(interface: str, *where: str) -> bool:
        return " state UP " in _ip(*where, "-o", "link", "show", interface).stdout

    def _remove(self) -> None:
        _ip("link", "del", self.host_if, check=False)       # deletes both ends
        _ip("netns", "del", self.name, check=False)

    def __exit__(self, *exc: object) -> None:
        self._remove()
