"""A network that really goes away: the daemon in its own network namespace, the broker across a veth pair.

A killed broker closes its connections; a cut link closes nothing, so only keepalives find out (the daemon's
after about twice its keepalive, the broker's after 1.5 times, publishing the daemon's last will). The link
is cut for 30 s while pictures keep arriving in the daemon's folder; afterwards every picture's result must
have arrived, a result that arrived twice must carry the same id, and the spool must be empty.
bench/network_cut.py runs 30 s and 5 minutes with counts; tests/netns.py makes the namespace.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.netns import NetnsError, NetnsLink

from .lcnet_bundle import lcnet_fp32_bundle
from .network_cut_support import run_cut

CUT_S = 30
KEEPALIVE = 5           # seconds: both sides notice the silent link well within the cut

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI runs as root)")


@pytest.fixture(scope="module")
def lcnet_bundle(shared_dir, tmp_path_factory):
    return lcnet_fp32_bundle(tmp_path_factory.getbasetemp() / "lcnet")


def connects_from_inside(link: NetnsLink, port: int) -> bool:
    """Whether a process inside the namespace opens a TCP connection to us within 2 s."""
    code = (f"import socket\ntry:\n    socket.create_connection(('{link.host_ip}', {port}), timeout=2).close()\n"
            "except OSError:\n    raise SystemExit(1)")
    return subprocess.run([*link.exec_prefix, sys.executable, "-c", code], timeout=30).returncode == 0


def test_netns_link_cuts_silently_restores_and_always_cleans_up():
    with pytest.raises(RuntimeError, match="on purpose"):
        with NetnsLink() as link:
            server = socket.create_server((link.host_ip, 0))
            port = server.getsockname()[1]
            assert connects_from_inside(link, port)
            link.cut()
            assert not connects_from_inside(link, port)     # no answer at all, not a refusal
            link.restore()
            assert connects_from_inside(link, port)
            server.close()
            raise RuntimeError("on purpose: the namespace must go even so")
    assert link.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", link.host_if], capture_output=True).returncode != 0


def test_link_cut_for_30_s_loses_no_result_and_the_spool_drains(tmp_path, lcnet_bundle):
    try:
        outcome = run_cut(tmp_path, lcnet_bundle, CUT_S, KEEPALIVE)
    except NetnsError as err:
        pytest.fail(f"could not make the network namespace: {err}", pytrace=False)
    print("\n[network cut] " + outcome.summary())
    tail = outcome.log[-3000:]
    assert outcome.missing == [], tail
    assert outcome.ids_differing == {}                          # a duplicate is a resend, never a second run
    assert outcome.daemon_noticed and outcome.will_published, tail     # the cut was silent and was found
    assert outcome.queued_away > 0 and outcome.replayed_at_reconnect[:1] > [0], tail    # the spool carried them
    assert outcome.spool_left == 0 and "never acknowledged" not in outcome.log, tail
    assert outcome.exit_code == 0 and "Traceback" not in outcome.log, tail
