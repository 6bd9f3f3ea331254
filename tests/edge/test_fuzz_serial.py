"""Fuzzed serial trigger lines (binary noise, wrong encodings, near-miss triggers, control characters) into real
SerialTriggerSources on ptys: exactly the lines that read as the trigger fire (any non-empty line for a source
without one), the reader thread survives, nothing is logged with a traceback. bench/fuzz.py sends 2,000 bursts."""
from __future__ import annotations

from .fuzz_inputs import SerialBench, serial_lines
from .fuzz_support import LogWatch, fuzz

BURSTS = 150


def test_fuzzed_trigger_lines_fire_exactly_the_trigger(tmp_path):
    bench = SerialBench(tmp_path)
    fired = []
    try:
        with LogWatch() as logs:
            fuzz(serial_lines(), BURSTS, lambda lines: fired.append(bench.check(lines, logs).check()))
    finally:
        bench.close()
    assert len(fired) == BURSTS
    assert [s.outages for s in bench.sources] == [0, 0]
