"""systemd's notify protocol (sd_notify), without libsystemd: readiness and the watchdog heartbeat.

Under `Type=notify` systemd passes a datagram socket in $NOTIFY_SOCKET (a path, or an abstract
name written with a leading '@'); the service sends `KEY=VALUE` lines to it. With `WatchdogSec=`
systemd also sets $WATCHDOG_USEC and restarts the service when no `WATCHDOG=1` arrives in time.
Outside systemd every call here is a no-op, so the daemon runs the same from a terminal.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("edge.daemon.watchdog")


def _address(value: str) -> str | bytes:
    # '@name' is Linux's abstract namespace: a leading NUL byte on the wire
    return b"\0" + value[1:].encode() if value.startswith("@") else value


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "STATUS=...") to systemd; False when not under systemd or it failed."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode("utf-8"), _address(target))
        return True
    except OSError as err:     # systemd going away must not take the daemon with it
        log.warning("could not notify systemd (%s): %s", target, err)
        return False


def ready(status: str | None = None) -> bool:
    """Startup is done: systemd considers the service started (`Type=notify`)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """One line shown by `systemctl status`."""
    return notify("STATUS=" + " ".join(text.split()))


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects a ping; None when no watchdog is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):   # meant for another process (e.g. our parent)
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Heartbeat:
    """Call `beat()` from the daemon's main loop: pings at half the watchdog interval, else does nothing.

    Pinging from the loop that does the work (not from a timer thread) is the point: a stuck loop
    stops the pings and systemd restarts the daemon.
    """

    def __init__(self, clock=time.monotonic):
        interval = watchdog_interval()
        self.period = interval / 2 if interval else None
        self._clock = clock
        self._last = float("-inf")

    def beat(self) -> bool:
        if self.period is None or self._clock() - self._last < self.period:
            return False
        self._last = self._clock()
        return watchdog_ping()
