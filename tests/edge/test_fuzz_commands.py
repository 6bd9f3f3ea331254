"""Fuzzed payloads on every `cmd/<name>` the daemon accepts (and on unknown names), through a real mosquitto
into a running daemon on a real bundle: each answered by one reply (an error reply in one clear line for
everything malformed), no traceback in the daemon log, and afterwards a good picture still gives a result.
Reduced counts here; bench/fuzz.py sends 10,000 per command."""
from __future__ import annotations

from edge.daemon.commands import COMMAND_MODELS

from .fuzz_daemon import FuzzedDaemon, fuzz_commands
from .fuzz_support import lcnet_bundle

PER_COMMAND = 60


def test_fuzzed_command_payloads_each_get_one_clear_reply(tmp_path_factory, shared_dir, tmp_path, mqtt_broker,
                                                          mqtt_subscriber, edge_daemon):
    bundle = lcnet_bundle(tmp_path_factory.getbasetemp() / "fuzz-lcnet")
    target = FuzzedDaemon(mqtt_broker, edge_daemon, mqtt_subscriber, bundle, tmp_path)
    try:
        tallies = fuzz_commands(target, PER_COMMAND)
        result = target.still_works()
    finally:
        target.close()
    assert sorted(tallies) == sorted([*COMMAND_MODELS, "unknown"])
    for name, tally in tallies.items():
        assert (tally.inputs, tally.crashes) == (PER_COMMAND, 0), tally.line(name)
        assert tally.errors > 0, tally.line(name)          # malformed payloads were sent and refused
    assert result["results"] and target.daemon.process.poll() is None
    assert not [line for line in target.daemon.lines if "Traceback" in line]


def test_a_field_name_with_line_breaks_is_refused_in_one_line():
    """Found by the fuzzer: an unknown field's name went into the reply (and the log) with its line break."""
    from edge.daemon.commands import CommandRouter

    reply = CommandRouter({"pause": lambda arguments: {}}).handle("pause", b'{"a\\nb\\u2028c": 1}')
    assert not reply["ok"] and reply["error"] == "pause: a\\nb\\u2028c: Extra inputs are not permitted"
