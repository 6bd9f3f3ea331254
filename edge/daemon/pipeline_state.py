"""What each pipeline shows *now*, retained on `edge/<device>/<pipeline>/state` (`edge.state/1`).

Results, errors and events are a stream: a dashboard (Home Assistant) that starts after them, or
restarts, would see nothing until the next one. The state message is the present instead, retained
by the broker: a summary of the last result (counts per label, OCR text and score, ...), the last
error and whether the last input failed (`problem`), each rule's current state, paused and threshold.

- The worker's thread records results and errors (`record_result`, `record_error`); the daemon's
  main thread publishes the message when it changed (`MqttPublisher.announce`: retained, sent again
  on every reconnect), so it never waits on the network.
- Across restarts: the last result and error are kept in the state folder (`pipeline_state.json`,
  written at most once a second and at a clean stop) and published again at start. Rules are not:
  a rule engine starts *off* (`rules.py`), so the state published at start says so, replacing
  whatever the previous run left retained; the first frames then announce what holds.
- Before its first result (a new state folder), a pipeline publishes no state: Home Assistant keeps
  its entities "unknown" rather than reading a null timestamp.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import contract

log = logging.getLogger("edge.daemon")

STATE_FILE = "pipeline_state.json"
SAVE_INTERVAL_S = 1.0
TEXT_CHARS = 255                # Home Assistant's longest state


def summarize(task: str, result: dict[str, Any]) -> dict[str, Any]:
    """The part of an `edge.result/1` a dashboard shows: bounded, whatever the number of items."""
    items = result["results"]
    labels = [item.get("label") for item in items]
    summary: dict[str, Any] = {
        "id": result["id"], "ts": result["ts"], "seq": result["seq"], "source": result["source"],
        "count": len(items), "counts": dict(Counter(label for label in labels if isinstance(label, str))),
        "label": labels[0] if items and isinstance(labels[0], str) else None,
        "score": _score(items[0]) if items else None,
    }
    if task == "ocr":       # lines in reading order: the text, and how sure the reader was on average
        summary["text"] = " ".join(str(item.get("text", "")) for item in items)[:TEXT_CHARS]
        scores = [s for s in map(_score, items) if s is not None]
        summary["score"] = round(sum(scores) / len(scores), 4) if scores else None
    if task == "segmentation":
        summary["area_percent"] = round(sum(float(item.get("area_ratio", 0.0)) for item in items) * 100, 1)
    return summary


def _score(item: dict[str, Any]) -> float | None:
    score = item.get("score")
    return round(float(score), 4) if isinstance(score, (int, float)) else None


class PipelineState:
    """One pipeline's present; written by its worker, read by the main thread (a lock between them)."""

    def __init__(self, pipeline: str, task: str, rules: list[str]):
        self.pipeline, self.task = pipeline, task
        self._lock = threading.Lock()
        self._rules = dict.fromkeys(rules, False)
        self._last_result: dict[str, Any] | None = None
        self._last_error: dict[str, Any] | None = None
        self._problem = False
        self._errors = 0            # inputs that gave an error in this run
        self._version = 0           # bumped on every change; the main thread compares
        self._published = 0

    # --- the worker's thread -------------------------------------------------------------------------
    def record_result(self, result: dict[str, Any], rule_states: dict[str, bool]) -> None:
        summary = summarize(self.task, result)
        with self._lock:
            self._last_result, self._problem = summary, False
            self._rules.update(rule_states)
            self._version += 1

    def record_error(self, error: dict[str, Any]) -> None:
        """An `edge.error/1` message."""
        with self._lock:
            self._last_error = {"ts": error["ts"], "source": error["source"], "error": error["error"]}
            self._problem = True
            self._errors += 1
            self._version += 1

    def set_task(self, task: str) -> None:
        """After a reload to a bundle of another task: the old summary's fields no longer apply."""
        with self._lock:
            if task != self.task:
                self.task, self._last_result = task, None
                self._version += 1

    # --- the main thread -------------------------------------------------------------------------------
    @property
    def known(self) -> bool:
        """Whether there is anything to publish: a result or error, now or from before a restart."""
        with self._lock:
            return self._last_result is not None or self._last_error is not None

    def changed(self) -> bool:
        """Changed since the last `message()` (and something is known)."""
        with self._lock:
            return self._version != self._published and (self._last_result or self._last_error) is not None

    def message(self, device: str, paused: bool, threshold: float | None) -> dict[str, Any]:
        with self._lock:
            self._published = self._version
            return contract.state_message(
                device=device, pipeline=self.pipeline, task=self.task, paused=paused, threshold=threshold,
                rules=dict(self._rules), last_result=self._last_result, last_error=self._last_error,
                problem=self._problem, errors=self._errors)

    def saved(self) -> dict[str, Any]:
        """What outlives a restart (rules do not: the engine starts off)."""
        with self._lock:
            return {"task": self.task, "last_result": self._last_result, "last_error": self._last_error,
                    "problem": self._problem}

    def restore(self, saved: dict[str, Any] | None) -> None:
        if not saved or saved.get("task") != self.task:     # another task's summary would mislead
            return
        with self._lock:
            self._last_result, self._last_error = saved.get("last_result"), saved.get("last_error")
            self._problem = bool(saved.get("problem"))
            self._version += 1


class StateFile:
    """`<state_dir>/pipeline_state.json`: each pipeline's `PipelineState.saved()`, written atomically."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / STATE_FILE
        self._next_save = 0.0
        self._written: str | None = None

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:      # a damaged file costs the summaries, not the start
            log.warning("ignoring %s (%s); pipeline states start empty", self.path, err)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, states: dict[str, dict[str, Any]], force: bool = False) -> bool:
        """Write if `states` changed, at most every SAVE_INTERVAL_S (`force`: now, at a clean stop)."""
        now = time.monotonic()
        if not force and now < self._next_save:
            return False
        text = contract.message_json(states)
        if text == self._written:
            return False
        self._next_save = now + SAVE_INTERVAL_S
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        self._written = text
        return True
