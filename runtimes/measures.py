"""Measures shared by the converter's judging (converters/metrics.py) and the device's
(edge/device/agreement.py), which cannot import the converter's shapely-based geometry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class BoxMatch:
    """One-to-one matching counts; add several images' matches together, then read f1."""
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: "BoxMatch") -> "BoxMatch":
        return BoxMatch(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when neither side found anything (they agree)."""
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
