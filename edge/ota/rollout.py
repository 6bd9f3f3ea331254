"""A group rollout: the devices that say `"group": NAME` in their retained `edge/<id>/ota` state, the first N
(by id) as canaries; the rest only when every canary ended `done`. A canary that fails stops the rollout
and the report names it, with the devices that were never offered the update."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .operator import DeviceProgress, Offer, Operator


@dataclass
class Rollout:
    canaries: list[str]
    rest: list[str]
    results: dict[str, DeviceProgress] = field(default_factory=dict)
    stopped: str | None = None            # why the rest was not offered

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(p.outcome == "done" for p in self.results.values())


def group_members(operator: Operator, group: str, settle: float = 2.0) -> list[str]:
    """Device ids whose retained OTA state names `group` (the broker sends them all on subscribing)."""
    members: dict[str, bool] = {}

    def seen(topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 3 or parts[2] != "ota":
            return
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            return
        members[parts[1]] = isinstance(data, dict) and data.get("group") == group

    operator.watch(["edge/+/ota"])
    operator.wait_connected()
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        operator.pump(0.1, seen)
    return sorted(device for device, member in members.items() if member)


def roll_out(operator: Operator, offer: Offer, devices: list[str], canaries: int, timeout: float) -> Rollout:
    plan = Rollout(canaries=devices[:canaries], rest=devices[canaries:])
    if plan.canaries:
        operator.report(f"canaries first: {', '.join(plan.canaries)}")
        plan.results.update(operator.push(offer, plan.canaries, timeout))
        bad = [d for d in plan.canaries if plan.results[d].outcome != "done"]
        if bad:
            plan.stopped = f"canary {bad[0]} ended {plan.results[bad[0]].outcome or 'without an answer'}"
            return plan
    if plan.rest:
        operator.report(f"now the other {len(plan.rest)} device(s)")
        plan.results.update(operator.push(offer, plan.rest, timeout))
    return plan
