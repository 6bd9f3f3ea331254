"""Rules that turn per-frame results into events: something appeared, a count crossed a value,
an object is inside a region. Dashboards subscribe to the events instead of parsing every frame.

Every rule is a yes/no condition evaluated on each frame's results. An event is emitted only when
the rule's state changes (edge-triggered), after the new condition held for `hold` frames in a
row, so one missed detection does not produce a disappear/appear pair. The state starts "off": the
first frame on which a condition holds (for `hold` frames) announces it.

There is no object tracking: a region rule says whether *some* matching object is inside (and how
many), not which one entered.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runtimes.errors import ConfigError, EdgeError

from .contract import check_topic_segment

Point = tuple[float, float]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    min_score: float = Field(0.0, ge=0, le=1, description="results scoring below this are ignored")
    hold: int = Field(1, ge=1, le=10_000, description="frames a new state must last before it is announced")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # Rule names appear in events, Home Assistant ids and templates: keep them plain.
        try:
            return check_topic_segment(value, "rule name")
        except ConfigError as err:
            # a pydantic error, so a config file's loader can point at the line
            raise PydanticCustomError("rule_name", str(err).removeprefix("rule name: ")) from None


class PresenceRule(_Rule):
    """A class appears (at least `min_count` of `label`) / disappears."""

    type: Literal["presence"]
    label: str = Field(min_length=1)
    min_count: int = Field(1, ge=1)


class CountRule(_Rule):
    """The number of results (of `label`, or all) goes above / below `value`."""

    type: Literal["count"]
    label: str | None = None
    direction: Literal["above", "below"]
    value: float = Field(ge=0)


class RegionRule(_Rule):
    """Objects of `label` inside a polygon: occupied (at least `min_count` inside) / empty.

    `anchor` says which point of a result must be inside: its box centre, the middle of its box's
    bottom edge (where a standing person's feet are), or any of its keypoints scoring at least
    `min_keypoint_score` (results without keypoints fall back to the box centre).
    """

    type: Literal["region"]
    label: str = "person"
    polygon: list[Point] = Field(min_length=3, max_length=256)
    coordinates: Literal["pixels", "normalized"] = "pixels"
    anchor: Literal["center", "bottom", "keypoints"] = "center"
    min_keypoint_score: float = Field(0.3, ge=0, le=1)
    min_count: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _coordinates(self) -> "RegionRule":
        if self.coordinates == "normalized" and any(not (0 <= v <= 1) for p in self.polygon for v in p):
            raise ValueError("normalized polygon coordinates must lie in 0..1")
        if self.coordinates == "pixels" and any(v < 0 for p in self.polygon for v in p):
            raise ValueError("pixel polygon coordinates cannot be negative")
        return self


RuleConfig = Annotated[Union[PresenceRule, CountRule, RegionRule], Field(discriminator="type")]
_RULES = TypeAdapter(list[RuleConfig])


def parse_rules(raw: Any, field: str = "rules") -> list[_Rule]:
    """A list of rule dicts (from YAML) -> typed rules; the first problem as a ConfigError with its field."""
    try:
        rules = _RULES.validate_python(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in (field, *first["loc"]))
        raise ConfigError(first["msg"], field=where) from None
    check_unique_names(rules, field)
    return rules


def check_unique_names(rules: list[_Rule], field: str = "rules") -> None:
    seen = Counter(rule.name for rule in rules)
    twice = sorted(name for name, n in seen.items() if n > 1)
    if twice:
        raise ConfigError(f"rule names must be unique within a pipeline; repeated: {', '.join(twice)}", field=field)


class RuleError(EdgeError):
    """A rule cannot be evaluated on what the pipeline gives it (e.g. normalized region, no frame size)."""


# ---- reading result items -------------------------------------------------------------------
def label_of(item: dict[str, Any]) -> str | None:
    """The class of a result; OCR lines have no label, their text stands in for it."""
    label = item.get("label", item.get("text"))
    return label if isinstance(label, str) else None


def score_of(item: dict[str, Any]) -> float:
    # segmentation items carry no score: a mask that is there counts as certain
    score = item.get("score", 1.0)
    return float(score) if isinstance(score, (int, float)) else 1.0


def anchor_points(item: dict[str, Any], anchor: str, min_keypoint_score: float) -> list[Point]:
    """The point(s) of a result a region rule tests, in pixels; [] for a result without a box."""
    box = item.get("box")
    if anchor == "keypoints" and item.get("keypoints"):
        return [(float(k["x"]), float(k["y"])) for k in item["keypoints"]
                if float(k.get("score", 1.0)) >= min_keypoint_score]
    if not box:
        return []
    if isinstance(box[0], (list, tuple)):            # OCR: four corners
        xs, ys = [float(p[0]) for p in box], [float(p[1]) for p in box]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    else:
        x1, y1, x2, y2 = (float(v) for v in box[:4])
    return [((x1 + x2) / 2, y2 if anchor == "bottom" else (y1 + y2) / 2)]


def inside(point: Point, polygon: list[Point]) -> bool:
    """Even-odd ray casting: a horizontal ray from the point crosses the outline an odd number of times."""
    x, y = point
    hit = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


# ---- conditions, one per rule type ------------------------------------------------------------
def _matching(rule: _Rule, results: list[dict[str, Any]], label: str | None) -> list[dict[str, Any]]:
    return [r for r in results if score_of(r) >= rule.min_score and (label is None or label_of(r) == label)]


def presence_condition(rule: PresenceRule, results: list[dict[str, Any]], size: Point | None) -> tuple[bool, int]:
    count = len(_matching(rule, results, rule.label))
    return count >= rule.min_count, count


def count_condition(rule: CountRule, results: list[dict[str, Any]], size: Point | None) -> tuple[bool, int]:
    count = len(_matching(rule, results, rule.label))
    return (count > rule.value if rule.direction == "above" else count < rule.value), count


def region_condition(rule: RegionRule, results: list[dict[str, Any]], size: Point | None) -> tuple[bool, int]:
    polygon = rule.polygon
    if rule.coordinates == "normalized":
        if size is None:
            raise RuleError(f"rule '{rule.name}': a normalized polygon needs the frame size, which was not given")
        polygon = [(x * size[0], y * size[1]) for x, y in polygon]
    count = sum(1 for r in _matching(rule, results, rule.label)
                if any(inside(p, polygon) for p in anchor_points(r, rule.anchor, rule.min_keypoint_score)))
    return count >= rule.min_count, count


CONDITIONS = {"presence": presence_condition, "count": count_condition, "region": region_condition}
# rule type -> (change word when the state turns on, when it turns off); count turns on "above"/"below"
CHANGES = {"presence": ("appeared", "disappeared"), "count": (None, "cleared"), "region": ("entered", "left")}


@dataclass
class _State:
    active: bool = False
    pending: int = 0          # frames in a row whose condition disagreed with `active`


class RuleEngine:
    """Evaluates a pipeline's rules frame by frame; `update` returns the events of this frame."""

    def __init__(self, rules: list[_Rule]):
        check_unique_names(list(rules))
        self.rules = list(rules)
        self._states = {rule.name: _State() for rule in self.rules}

    def update(self, results: list[dict[str, Any]], ts: str,
               image_size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """One frame's results (and its (width, height), needed by normalized regions) -> events."""
        size = (float(image_size[0]), float(image_size[1])) if image_size else _mask_size(results)
        events = []
        for rule in self.rules:
            condition, count = CONDITIONS[rule.type](rule, results, size)
            state = self._states[rule.name]
            if condition == state.active:
                state.pending = 0
                continue
            state.pending += 1
            if state.pending >= rule.hold:
                state.active, state.pending = condition, 0
                events.append(self._event(rule, condition, count, results, ts))
        return events

    def states(self) -> dict[str, bool]:
        """Each rule's current (announced) state."""
        return {name: state.active for name, state in self._states.items()}

    def _event(self, rule: _Rule, active: bool, count: int, results: list[dict[str, Any]],
               ts: str) -> dict[str, Any]:
        on, off = CHANGES[rule.type]
        change = (on or rule.direction) if active else off
        event: dict[str, Any] = {"ts": ts, "rule": rule.name, "type": rule.type, "change": change,
                                 "active": active, "count": count}
        if getattr(rule, "label", None) is not None:
            event["label"] = rule.label
        if isinstance(rule, CountRule):
            event.update(direction=rule.direction, value=rule.value)
        event["counts"] = dict(Counter(r["label"] for r in results if isinstance(r.get("label"), str)))
        return event


def _mask_size(results: list[dict[str, Any]]) -> Point | None:
    # segmentation results carry the frame size in their mask: (h, w) -> (w, h)
    for item in results:
        size = (item.get("mask") or {}).get("size")
        if size and len(size) == 2:
            return float(size[1]), float(size[0])
    return None
