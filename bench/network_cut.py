"""A network that really goes away, for 30 s and for 5 minutes: is any result lost?

The daemon runs in its own network namespace, joined to a local mosquitto by a veth pair (tests/netns.py;
needs root); pictures arrive in its folder source every 0.25 s while the link is cut (packets vanish,
nothing is reset) and then restored. For each cut it prints the pictures, the result messages received,
distinct ids, lost results, duplicate deliveries (same id) and pictures with differing ids, what the
daemon spooled while away and replayed at the reconnect, whether each side noticed (the daemon's
keepalive, the broker's last will), how long after the restore every result had arrived, and what was
left in the spool. Usage:
    python bench/network_cut.py [--cuts 30 300] [--keepalive 30] [--bundle DIR] [--work DIR]
The daemon's default keepalive is 30 s: it notices a silent link after about 60 s, the broker after 45 s.
Without --bundle it converts PP-LCNet from ../shared/models (about 5 s). Exit status 1 if a result was lost.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.edge.lcnet_bundle import lcnet_fp32_bundle  # noqa: E402
from tests.edge.network_cut_support import run_cut  # noqa: E402
from tests.netns import unavailable_reason  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=float, nargs="+", default=[30.0, 300.0], help="seconds each cut lasts")
    parser.add_argument("--keepalive", type=int, default=30, help="the daemon's MQTT keepalive (default 30)")
    parser.add_argument("--bundle", type=Path, help="a bundle to run (default: PP-LCNet FP32, converted)")
    parser.add_argument("--work", type=Path, help="folder for broker, state and logs (default: a temp folder)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"network_cut: {reason}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-netcut-"))
    bundle = args.bundle or lcnet_fp32_bundle(work / "bundle")
    failed = False
    for cut_s in args.cuts:
        run_dir = work / f"cut-{cut_s:g}s"
        print(f"cutting the link for {cut_s:g} s (keepalive {args.keepalive} s); work folder {run_dir}", flush=True)
        outcome = run_cut(run_dir, bundle, cut_s, args.keepalive, settle_timeout=cut_s + 180)
        (run_dir / "daemon.log").write_text(outcome.log, encoding="utf-8")
        print(outcome.summary(), flush=True)
        if outcome.missing or outcome.ids_differing or outcome.spool_left:
            failed = True
            print(f"  lost: {outcome.missing[:20]}; differing ids: {dict(list(outcome.ids_differing.items())[:5])}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
