"""Fuzz targets through a running daemon: payloads on every `cmd/<name>` through a real mosquitto, and mutated
pictures dropped into its folder source. Every input must get one answer (a reply; a result or an error message),
the daemon log must stay free of tracebacks, and a good picture afterwards must still give a result."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import jsonschema
import paho.mqtt.client as paho
import yaml
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edge.daemon import contract
from edge.daemon.commands import COMMAND_MODELS
from tests.conftest import REPO_ROOT, Broker, DaemonProcess, Subscriber

from .fuzz_support import GOOD_PICTURE, Outcome, Tally, clear_line_problem, fuzz, json_values, manifest_of, \
    mutated_bytes, mutated_tree

DEVICE = "fuzz-01"
DAEMON_TRACEBACK = ("Traceback", "unexpected failure", "internal error")
BATCH = 50                  # commands in flight at once


def validator(schema: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((REPO_ROOT / contract.SCHEMA_FILES[schema]).read_text()))


class FuzzedDaemon:
    """A daemon on `bundle` (config file: a folder source, the bundle's parent as bundles folder) on `broker`,
    a subscriber to everything it says and a sender of commands. `start` and `subscribe` are the conftest
    fixtures' factories in a test, the classes themselves in bench/fuzz.py."""

    def __init__(self, broker: Broker, start: Callable[[list[str]], DaemonProcess],
                 subscribe: Callable[[Broker, list[str]], Subscriber], bundle: Path, folder: Path):
        self.bundle, self.inbox = bundle, folder / "in"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.pipeline = manifest_of(bundle)["pipeline"]
        config = folder / "edge.yaml"
        config.write_text(yaml.safe_dump({
            "device_id": DEVICE, "broker": {"url": broker.url}, "state_dir": str(folder / "state"),
            "bundles_dir": str(bundle.parent), "metrics_interval": 0,
            "pipelines": [{"bundle": str(bundle), "source": str(self.inbox), "poll_interval": 0.1}]}))
        self.sub = subscribe(broker, [f"edge/{DEVICE}/#"])
        self.daemon = start([str(config)])
        self.sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzzer-{uuid.uuid4().hex[:8]}")
        self.sender.connect(broker.host, broker.port)
        self.sender.loop_start()
        self.replies = validator(contract.REPLY_SCHEMA)
        self._log_seen = 0
        self._await_commands()

    def _await_commands(self, timeout: float = 60.0) -> None:
        """Until the daemon answers commands (it subscribes once connected)."""
        deadline, topic = time.monotonic() + timeout, contract.reply_topic(DEVICE, "pause")
        while not self.sub.on(topic):
            if time.monotonic() > deadline or self.daemon.process.poll() is not None:
                raise RuntimeError(f"the daemon never answered a command; its log:\n{self.daemon.log[-3000:]}")
            self.sender.publish(contract.command_topic(DEVICE, "pause"), b'{"pipeline": "no-such"}', qos=1)
            time.sleep(0.5)

    def ask(self, name: str, payload: bytes) -> Outcome:
        """One command; its one reply, judged."""
        return self.ask_many([(name, payload)])[0]

    def ask_many(self, commands: list[tuple[str, bytes]], timeout: float = 60.0) -> list[Outcome]:
        """(name, payload) commands sent back to back (one round trip costs ~90 ms of Nagle and delayed ACKs on
        loopback); the replies come in order on each command's reply topic (QoS 1 keeps the order), one each."""
        names = list(dict.fromkeys(name for name, _ in commands))
        before = {name: len(self.sub.on(contract.reply_topic(DEVICE, name))) for name in names}
        for name, payload in commands:
            self.sender.publish(contract.command_topic(DEVICE, name), payload, qos=1)
        replies: dict[str, list[dict]] = {}
        for name in names:
            wanted = sum(1 for n, _ in commands if n == name)
            arrived = self.sub.wait_for(contract.reply_topic(DEVICE, name), before[name] + wanted, timeout)
            replies[name] = [m.json() for m in arrived[before[name]:]]
        outcomes = [self._judge((name, payload), replies[name].pop(0)) for name, payload in commands]
        problem = self.new_log_problem()
        if problem:
            outcomes.append(Outcome("the daemon log", crash=f"daemon log: {problem}", traceback=True))
        return outcomes

    def _judge(self, given: tuple[str, bytes], reply: dict) -> Outcome:
        try:
            self.replies.validate(reply)
        except jsonschema.ValidationError as err:
            return Outcome(given, crash=f"reply does not match edge.reply/1: {err.message}")
        if reply["ok"]:
            return Outcome(given)
        problem = clear_line_problem(reply["error"])
        return Outcome(given, error=reply["error"], crash=problem and f"reply error with {problem}: {reply['error']}")

    def new_log_problem(self) -> str | None:
        lines = self.daemon.lines[self._log_seen:]
        self._log_seen += len(lines)
        return next((line for line in lines if any(word in line for word in DAEMON_TRACEBACK)), None)

    def still_works(self, name: str = "after-fuzz.jpg", timeout: float = 60.0) -> dict:
        """Resume, let everything through, drop a good picture in: its result (fails the caller otherwise)."""
        assert self.ask("resume", b"{}").error is None
        assert self.ask("set_threshold", json.dumps({"pipeline": self.pipeline, "value": 0}).encode()).error is None
        results = contract.results_topic(DEVICE, self.pipeline)
        before = len(self.sub.on(results))
        drop(self.inbox, name, GOOD_PICTURE.read_bytes())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [m.json() for m in self.sub.on(results)[before:] if m.json()["source"].endswith(name)]
            if mine:
                return mine[0]
            time.sleep(0.05)
        raise AssertionError(f"no result for a good picture after fuzzing; daemon log:\n{self.daemon.log[-3000:]}")

    def close(self) -> None:
        self.sender.disconnect()
        self.sender.loop_stop()


def drop(folder: Path, name: str, data: bytes) -> None:
    """A file appears in one step, as a camera's upload finishes (a rename), so the source never reads half."""
    part = folder / f".{name}.part"
    part.write_bytes(data)
    os.replace(part, folder / name)


# --- commands -----------------------------------------------------------------------------------------------

def command_payloads(name: str, pipeline: str, bundle_name: str) -> st.SearchStrategy:
    """Payload bytes for `cmd/<name>`: plausible objects with any field taking any value, mutated valid
    payloads, mutated JSON bytes and plain binary."""
    good = {"pipeline": pipeline, "value": 0.5, "bundle": bundle_name, "request_id": "r-1"}
    fields = [f for f in COMMAND_MODELS[name].model_fields if f in good]
    base = {f: good[f] for f in fields}
    plausible = st.fixed_dictionaries({}, optional={f: st.one_of(st.just(good[f]), json_values()) for f in fields})
    objects = st.one_of(plausible, plausible, mutated_tree(base)).map(lambda obj: json.dumps(obj).encode())
    return st.one_of(objects, objects, mutated_bytes(json.dumps(base).encode(), max_ops=3), st.binary(max_size=120))


UNKNOWN_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True).filter(
    lambda n: n not in COMMAND_MODELS)


def fuzz_commands(target: FuzzedDaemon, per_command: int, derandomize: bool = True,
                  check: bool = True) -> dict[str, Tally]:
    """`per_command` payloads on each command, and as many on unknown command names; check=True fails on the
    first crash (a test), else everything is tallied (the bench)."""
    tallies: dict[str, Tally] = {}
    for name in [*COMMAND_MODELS, None]:
        tally = tallies[name or "unknown"] = Tally().named(f"cmd/{name or '<unknown names>'}")
        if name is None:
            drawn = draw(st.tuples(UNKNOWN_NAMES, st.binary(max_size=40)), per_command, derandomize)
        else:
            payloads = draw(command_payloads(name, target.pipeline, target.bundle.name), per_command, derandomize)
            drawn = [(name, payload) for payload in payloads]
        for start in range(0, len(drawn), BATCH):
            for outcome in target.ask_many(drawn[start:start + BATCH]):
                tally.count(outcome.check() if check else outcome)
    return tallies


def draw(strategy: st.SearchStrategy, count: int, derandomize: bool) -> list[Any]:
    drawn: list[Any] = []
    fuzz(strategy, count, drawn.append, derandomize)
    return drawn


def commands_through_daemon(bundle: Path, per_command: int, folder: Path, random: bool) -> list[Tally]:
    """For bench/fuzz.py: its own broker and daemon; afterwards a good picture must give a result."""
    return _with_daemon(bundle, folder, lambda target: list(
        fuzz_commands(target, per_command, derandomize=not random, check=False).values()))


# --- pictures through the daemon ----------------------------------------------------------------------------

def fuzz_pictures(target: FuzzedDaemon, pictures: list[tuple[str, bytes]], timeout: float = 600.0) -> Tally:
    """Drop every picture into the daemon's folder; each must come back as one result or one error message."""
    results = contract.results_topic(DEVICE, target.pipeline)
    errors = contract.errors_topic(DEVICE, target.pipeline)
    names = [f"fuzz{index:05d}{suffix}" for index, (suffix, _data) in enumerate(pictures)]
    for name, (_suffix, data) in zip(names, pictures):
        drop(target.inbox, name, data)
    answers: dict[str, list[dict]] = {}
    deadline = time.monotonic() + timeout
    while len(answers) < len(names) and time.monotonic() < deadline:
        time.sleep(0.2)
        answers = {}
        for message in target.sub.on(results) + target.sub.on(errors):
            body = message.json()
            answers.setdefault(Path(body["source"]).name, []).append(body)
    tally, error_schema = Tally(), validator(contract.ERROR_SCHEMA)
    for name in names:
        got = {m["id"]: m for m in answers.get(name, [])}.values()       # QoS 1 may deliver one twice
        failed = [m for m in got if m["schema"] == contract.ERROR_SCHEMA]
        if len(got) != 1:
            tally.count(Outcome(name, crash=f"{len(got)} answers"))
        elif failed:
            error_schema.validate(failed[0])
            problem = clear_line_problem(failed[0]["error"])
            tally.count(Outcome(name, error=failed[0]["error"], crash=problem and f"error with {problem}"))
        else:
            tally.count(Outcome(name))
    problem = target.new_log_problem()
    if problem:
        tally.count(Outcome("the daemon log", crash=problem, traceback=True))
    return tally


def pictures_through_daemon(bundle: Path, pictures: list[tuple[str, bytes]], folder: Path) -> Tally:
    return _with_daemon(bundle, folder, lambda target: fuzz_pictures(target, pictures))


def _with_daemon(bundle: Path, folder: Path, work: Callable[[FuzzedDaemon], Any]) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    broker = Broker(folder / "broker")
    broker.start()
    started: list[DaemonProcess] = []
    target = None
    try:
        target = FuzzedDaemon(broker, lambda args: started.append(DaemonProcess(args)) or started[-1],
                              lambda b, topics: Subscriber(b, topics), bundle, folder)
        found = work(target)
        target.still_works()
        return found
    finally:
        if target is not None:
            target.close()
            target.sub.close()
        for daemon in started:
            daemon.kill()
        broker.stop()
        shutil.rmtree(folder / "in", ignore_errors=True)
