"""Commands: strict payloads, error replies for anything else, hostile payloads that reach nothing,
and the round trip through a real mosquitto (command topic in, reply topic out)."""
from __future__ import annotations

import json
import math
import threading
import uuid
from pathlib import Path

import jsonschema
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.daemon import contract
from edge.daemon.commands import MAX_PAYLOAD_BYTES, CommandRouter
from runtimes.errors import EdgeError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cam-05"


def reply_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[contract.REPLY_SCHEMA]).read_text())
    return jsonschema.Draft202012Validator(schema)


class FakeDaemonState:
    """What the handlers act on: plain state, so a test sees exactly which handler ran with what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.pipelines = {"door": {"paused": False, "threshold": 0.5}}

    def handler(self, name: str):
        def handle(arguments: dict) -> dict:
            self.calls.append((name, arguments))
            pipeline = arguments.get("pipeline")
            if pipeline is not None and pipeline not in self.pipelines:
                raise EdgeError(f"no pipeline '{pipeline}'")
            if name == "set_threshold":
                self.pipelines[pipeline]["threshold"] = arguments["value"]
            if name == "snapshot":
                raise RuntimeError("camera went away")       # a handler bug: answered, not fatal
            return {"done": name, **arguments}
        return handle


@pytest.fixture
def bundles(tmp_path) -> Path:
    folder = tmp_path / "bundles"
    (folder / "picodet_v2").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (folder / "escape").symlink_to(tmp_path / "secret")        # a link leading out of the folder
    return folder


@pytest.fixture
def state() -> FakeDaemonState:
    return FakeDaemonState()


@pytest.fixture
def router(state, bundles) -> CommandRouter:
    names = ["pause", "resume", "set_threshold", "snapshot", "reload"]
    return CommandRouter({name: state.handler(name) for name in names}, bundles_dir=bundles)


def handle(router: CommandRouter, name: str, payload) -> dict:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    reply = router.handle(name, raw)
    reply_validator().validate(json.loads(contract.message_json(reply)))
    return reply


# ---- good commands -------------------------------------------------------------------------------
def test_valid_commands_reach_their_handler_with_validated_arguments(router, state, bundles):
    assert handle(router, "pause", b"")["ok"]                                # empty payload: all pipelines
    reply = handle(router, "set_threshold", {"pipeline": "door", "value": 1, "request_id": "abc-1"})
    assert (reply["ok"], reply["request_id"], reply["command"]) == (True, "abc-1", "set_threshold")
    assert state.pipelines["door"]["threshold"] == 1.0
    reply = handle(router, "reload", {"pipeline": "door", "bundle": "picodet_v2"})
    assert reply["ok"] and reply["result"]["bundle_path"] == str((bundles / "picodet_v2").resolve())
    assert handle(router, "resume", {"pipeline": "door"})["ok"]
    assert [name for name, _ in state.calls] == ["pause", "set_threshold", "reload", "resume"]
    assert state.calls[0][1] == {"pipeline": None} and "request_id" not in state.calls[1][1]


def test_handler_refusals_and_bugs_become_error_replies(router, state):
    refused = handle(router, "pause", {"pipeline": "garage"})
    assert not refused["ok"] and refused["error"] == "no pipeline 'garage'"
    crashed = handle(router, "snapshot", {"pipeline": "door", "request_id": "s1"})
    assert (crashed["ok"], crashed["error"], crashed["request_id"]) == (False, "internal error: RuntimeError", "s1")


def test_unknown_and_unwired_commands_get_error_replies(state):
    router = CommandRouter({"pause": state.handler("pause")})
    unknown = handle(router, "reboot", {})
    assert not unknown["ok"] and "unknown command 'reboot'" in unknown["error"]
    unwired = handle(router, "resume", {})
    assert not unwired["ok"] and "not available" in unwired["error"]
    with pytest.raises(ValueError, match="no such command"):
        CommandRouter({"format_disk": state.handler("x")})
    assert state.calls == []


# ---- bad payloads --------------------------------------------------------------------------------
BAD_PAYLOADS = [
    ("pause", b"{not json", "not valid JSON"),
    ("pause", b"[1, 2]", "must be a JSON object"),
    ("pause", b'"door"', "must be a JSON object"),
    ("pause", b"\xff\xfe{}", "not UTF-8"),
    ("pause", b"[" * 60_000, "nested too deeply"),
    ("pause", b'{"pipeline": "door", "force": true}', "force"),
    ("pause", b'{"pipeline": 7}', "pipeline"),
    ("set_threshold", b'{"pipeline": "door", "value": "0.5"}', "value"),
    ("set_threshold", b'{"pipeline": "door", "value": true}', "value"),
    ("set_threshold", b'{"pipeline": "door", "value": 1.5}', "value"),
    ("set_threshold", b'{"pipeline": "door", "value": NaN}', "not valid JSON"),
    ("set_threshold", b'{"pipeline": "door", "value": Infinity}', "not valid JSON"),
    ("set_threshold", b'{"pipeline": "door", "value": 1e999}', "value"),
    ("set_threshold", b'{"value": 0.5}', "pipeline"),
    ("snapshot", b'{"pipeline": null}', "pipeline"),
    ("reload", b'{"pipeline": "door", "bundle": 3}', "bundle"),
    ("pause", b'{"request_id": "' + b"x" * (MAX_PAYLOAD_BYTES + 1) + b'"}', "byte limit"),
]


@pytest.mark.parametrize("name, payload, says", BAD_PAYLOADS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_PAYLOADS)])
def test_bad_payloads_get_an_error_reply_and_reach_no_handler(router, state, name, payload, says):
    reply = handle(router, name, payload)
    assert reply["ok"] is False and says in reply["error"], reply["error"]
    assert state.calls == []


def test_the_request_id_is_echoed_even_when_the_rest_is_wrong(router):
    reply = handle(router, "set_threshold", {"pipeline": "door", "value": 2, "request_id": "r-42"})
    assert (reply["ok"], reply["request_id"]) == (False, "r-42")
    assert handle(router, "set_threshold", b"{oops")["request_id"] is None


# ---- hostile payloads ----------------------------------------------------------------------------
def hostile_payloads(canary: Path) -> list[tuple[str, dict]]:
    shell = [f"x; touch {canary}", f"$(touch {canary})", f"`touch {canary}`", f"door && touch {canary}",
             f"door | tee {canary}", f"door\ntouch {canary}"]
    paths = ["../secret", "../../etc", "/etc/passwd", "/etc", "..", ".", "a/b", "escape/../..", "..\\..\\etc",
             "picodet_v2/../../secret", "picodet_v2\x00", "~root", ".hidden", "escape", str(canary)]
    commands = [("pause", {"pipeline": p}) for p in shell]
    commands += [("set_threshold", {"pipeline": p, "value": 0.5}) for p in shell]
    commands += [("reload", {"pipeline": "door", "bundle": b}) for b in paths + shell]
    commands += [("reload", {"pipeline": p}) for p in paths if p != "escape"]   # "escape" is a fine pipeline name
    return commands


def test_hostile_payloads_are_refused_and_nothing_runs_or_opens_outside(router, state, tmp_path):
    canary = tmp_path / "pwned"
    for name, payload in hostile_payloads(canary):
        reply = handle(router, name, payload)
        assert reply["ok"] is False, (name, payload, reply)
    assert state.calls == [], "a hostile payload reached a handler"
    assert not canary.exists()
    assert sorted(p.name for p in (tmp_path / "secret").iterdir()) == []


def test_a_symlink_inside_the_bundles_folder_cannot_lead_out(router, state):
    reply = handle(router, "reload", {"pipeline": "door", "bundle": "escape"})
    assert not reply["ok"] and "outside the bundles folder" in reply["error"]
    missing = handle(router, "reload", {"pipeline": "door", "bundle": "picodet_v3"})
    assert not missing["ok"] and "no bundle 'picodet_v3'" in missing["error"]
    assert state.calls == []


def test_reload_by_name_needs_a_bundles_folder(state):
    router = CommandRouter({"reload": state.handler("reload")})
    reply = handle(router, "reload", {"pipeline": "door", "bundle": "picodet_v2"})
    assert not reply["ok"] and "no bundles folder" in reply["error"]
    assert handle(router, "reload", {"pipeline": "door"})["ok"]       # the current bundle needs none


# ---- through a real broker -----------------------------------------------------------------------
class Responder:
    """The daemon's side of commands, as the daemon core wires it: subscribe, route, reply (QoS 1)."""

    def __init__(self, broker, router: CommandRouter):
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{DEVICE}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(contract.command_filter(DEVICE), qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self._answer(router, msg)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _answer(self, router: CommandRouter, msg) -> None:
        answer = router.handle_message(DEVICE, msg.topic, bytes(msg.payload))
        if answer is not None:
            topic, reply = answer
            self.client.publish(topic, contract.encode_message(reply), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_commands_and_replies_through_mosquitto(mqtt_broker, mqtt_subscriber, router, state):
    responder = Responder(mqtt_broker, router)
    try:
        replies = mqtt_subscriber(mqtt_broker, [f"edge/{DEVICE}/cmd/+/reply"])
        sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dashboard-{uuid.uuid4().hex[:8]}")
        sender.connect(mqtt_broker.host, mqtt_broker.port)
        sender.loop_start()
        sent = [("set_threshold", {"pipeline": "door", "value": 0.25, "request_id": "t1"}),
                ("pause", {"pipeline": "door", "request_id": "p1", "extra": 1}),
                ("reload", {"pipeline": "door", "bundle": "../../etc", "request_id": "r1"}),
                ("self_destruct", {"request_id": "x1"})]
        for name, payload in sent:
            sender.publish(contract.command_topic(DEVICE, name), json.dumps(payload), qos=1).wait_for_publish(10)
        # another device's command topic is not ours to answer
        sender.publish(contract.command_topic("cam-99", "pause"), b"{}", qos=1).wait_for_publish(10)
        got = {}
        for name, _payload in sent:
            message = replies.wait_for(contract.reply_topic(DEVICE, name), 1, timeout=20)[0]
            reply = message.json()
            reply_validator().validate(reply)
            got[name] = reply
        sender.disconnect()
        sender.loop_stop()
    finally:
        responder.close()
    assert got["set_threshold"]["ok"] and got["set_threshold"]["request_id"] == "t1"
    assert math.isclose(state.pipelines["door"]["threshold"], 0.25)
    assert [(n, got[n]["ok"], got[n]["request_id"]) for n in ("pause", "reload", "self_destruct")] == [
        ("pause", False, "p1"), ("reload", False, "r1"), ("self_destruct", False, "x1")]
    assert [name for name, _ in state.calls] == ["set_threshold"]
    assert not any("cam-99" in m.topic for m in replies.messages)
