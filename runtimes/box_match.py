"""One-to-one box matching counts, shared by the converter's judging (converters/metrics.py) and the
device's (edge/device/agreement.py), which cannot import the converter's shapely-based geometry."""
from __future__ import annotations

from dataclasses import dataclass


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
