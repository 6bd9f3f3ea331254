"""Evaluation: how the quantize pass orders candidates (within budget first, then the more faithful)."""
from __future__ import annotations

from converters.families.base import Evaluation


def cer(value: float, budget: float = 0.02) -> Evaluation:
    return Evaluation("cer vs fp32", value, budget, value <= budget, 100, lower_is_better=True)


def f1(value: float, budget: float = 0.95) -> Evaluation:
    return Evaluation("box_f1@0.5 vs fp32", value, budget, value >= budget, 100)


def test_an_error_rate_within_budget_outranks_any_that_misses_it():
    # PP-OCRv4 rec: minmax 7.3%, p99.999 2.6% miss, p99.99 1.2% passes; min() over (passed, value)
    # once picked 2.6% here and sent a passing graph on to a needless channel-group search.
    ranked = sorted([cer(0.073), cer(0.012), cer(0.026)], key=lambda e: e.rank, reverse=True)
    assert [e.value for e in ranked] == [0.012, 0.026, 0.073]
    assert max([cer(0.019), cer(0.004)], key=lambda e: e.rank).value == 0.004


def test_an_agreement_within_budget_outranks_any_that_misses_it():
    ranked = sorted([f1(0.94), f1(0.99), f1(0.96)], key=lambda e: e.rank, reverse=True)
    assert [e.value for e in ranked] == [0.99, 0.96, 0.94]
    assert f1(0.951).rank > f1(0.949).rank and not f1(0.949).passed
