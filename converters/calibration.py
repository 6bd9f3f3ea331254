"""Calibration inputs for onnxruntime's static quantization, over feeds a task family prepared."""
from __future__ import annotations

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

Feeds = dict[str, np.ndarray]


class FeedListReader(CalibrationDataReader):
    """onnxruntime's CalibrationDataReader over an in-memory list of feed dicts (re-readable)."""

    def __init__(self, feeds: list[Feeds]):
        self.feeds = list(feeds)
        self.rewind()

    def get_next(self) -> Feeds | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Used by onnxruntime's strided MinMax calibration (CalibStridedMinMax)."""
        self._iter = iter(self.feeds[start_index:end_index])
