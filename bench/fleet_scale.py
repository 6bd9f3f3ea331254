"""A fleet on one broker: N simulated devices (the daemon's real publisher and SQLite spool each, status, last
will, description, results, retained metrics and OTA state), then `edge fleet ls` as an operator runs it.

Prints the time to connect them all, to get every result acknowledged, and what `edge fleet ls` took and saw,
with message counts.

    python bench/fleet_scale.py [--devices 50] [--frames 20]

The simulated devices only announce an idle `edge.ota/1` state; the group OTA of a fleet with canaries
(`edge ota push PKG --group NAME --canary 2`) runs on 50 real daemons in bench/fleet_ota.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.broker import LocalBroker  # noqa: E402
from edge.daemon.config import BrokerConfig  # noqa: E402
from edge.fleet.listener import QUIET_S, FleetListener  # noqa: E402
from tests.edge.fleet_support import SimulatedFleet, fleet_cli  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--frames", type=int, default=20, help="results each device sends")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-scale-") as work, LocalBroker(Path(work) / "broker") as broker:
        fleet = SimulatedFleet(broker.url, args.devices, Path(work) / "devices", groups=5)
        try:
            stats = fleet.run(args.frames, timeout=300)
            started = time.monotonic()
            proc = fleet_cli("ls", "--mqtt", broker.url, "--json")
            ls_s = time.monotonic() - started
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            rows = json.loads(proc.stdout)
            with FleetListener(BrokerConfig(url=broker.url)) as listener:
                started = time.monotonic()
                listener.settle(10)
                settle_s = time.monotonic() - started
        finally:
            fleet.close()
    online = sum(row["status"] == "online" for row in rows)
    print(f"devices: {args.devices}, each with its own spool; {args.frames} results each")
    print(f"connect all:                  {stats['connect_s']:.2f} s")
    print(f"results acknowledged:         {int(stats['results_acked'])} in {stats['results_s']:.2f} s "
          f"({stats['results_acked'] / max(stats['results_s'], 1e-9):.0f} msg/s through {args.devices} spools)")
    print(f"retained metrics published:   {int(stats['metrics_sent'])}")
    print(f"edge fleet ls --json:         {len(rows)} devices, {online} online, {ls_s:.2f} s wall "
          "(process start, connect, retained burst, settle)")
    print(f"retained burst in-process:    {listener.fleet.messages} messages for {len(listener.fleet.devices)} devices "
          f"in {settle_s:.2f} s (incl. {QUIET_S:.1f} s of silence that ends it)")
    return 0 if online == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())
