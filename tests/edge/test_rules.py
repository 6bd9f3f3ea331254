"""Rules: typed configs, edge-triggered events with hold frames, and region geometry — on
hand-made frames for the exact edges, and on a real detector's results for a sequence of real pictures."""
from __future__ import annotations

import pytest

from edge.daemon import contract
from edge.daemon.rules import RuleEngine, RuleError, inside, parse_rules
from runtimes.errors import ConfigError

TS = "2025-01-31T12:00:00.000Z"


def person(x1, y1, x2, y2, score=0.9, **extra):
    return {"label": "person", "score": score, "box": [x1, y1, x2, y2], **extra}


def run(engine: RuleEngine, frames: list[list[dict]], **kw) -> list[tuple[int, str, str]]:
    """(frame index, rule, change) of every event over the frames."""
    return [(i, e["rule"], e["change"]) for i, frame in enumerate(frames) for e in engine.update(frame, TS, **kw)]


# ---- configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, field", [
    ([{"name": "a", "type": "presence", "label": "bus", "colour": "red"}], "rules.0.presence.colour"),
    ([{"name": "a", "type": "teleport", "label": "bus"}], "rules.0"),
    ([{"name": "a", "type": "count", "direction": "sideways", "value": 2}], "rules.0.count.direction"),
    ([{"name": "a", "type": "count", "direction": "above", "value": -1}], "rules.0.count.value"),
    ([{"name": "a", "type": "presence", "label": "bus", "hold": 0}], "rules.0.presence.hold"),
    ([{"name": "a b", "type": "presence", "label": "bus"}], "rules.0.presence.name"),
    ([{"name": "a", "type": "region", "polygon": [[0, 0], [1, 0]]}], "rules.0.region.polygon"),
    ([{"name": "a", "type": "region", "polygon": [[0, 0], [2, 0], [0, 1]], "coordinates": "normalized"}],
     "rules.0.region"),
])
def test_bad_rule_configs_name_the_field(raw, field):
    with pytest.raises(ConfigError) as err:
        parse_rules(raw)
    assert err.value.field == field, str(err.value)


def test_rule_names_must_be_unique():
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_rules([{"name": "a", "type": "presence", "label": "bus"},
                     {"name": "a", "type": "count", "direction": "above", "value": 1}])


# ---- edges ---------------------------------------------------------------------------------------
def test_presence_is_announced_once_per_change():
    engine = RuleEngine(parse_rules([{"name": "someone", "type": "presence", "label": "person"}]))
    frames = [[], [person(0, 0, 5, 5)], [person(0, 0, 5, 5)], [person(1, 1, 5, 5)], [], [], [person(0, 0, 5, 5)]]
    assert run(engine, frames) == [(1, "someone", "appeared"), (4, "someone", "disappeared"),
                                   (6, "someone", "appeared")]


def test_hold_ignores_a_flicker_shorter_than_it():
    engine = RuleEngine(parse_rules([{"name": "someone", "type": "presence", "label": "person", "hold": 3}]))
    seen, gone = [person(0, 0, 5, 5)], []
    frames = [seen, seen, seen,          # appeared on the third frame in a row
              gone, seen, gone, gone,    # a one-frame and a two-frame miss: no change
              seen, gone, gone, gone]    # three misses in a row: disappeared
    assert run(engine, frames) == [(2, "someone", "appeared"), (10, "someone", "disappeared")]


def test_min_score_and_min_count():
    engine = RuleEngine(parse_rules([{"name": "pair", "type": "presence", "label": "person",
                                      "min_count": 2, "min_score": 0.5}]))
    frames = [[person(0, 0, 1, 1), person(0, 0, 1, 1, score=0.3)],     # one counts
              [person(0, 0, 1, 1), person(0, 0, 1, 1, score=0.6)]]     # two count
    events = [engine.update(f, TS) for f in frames]
    assert events[0] == [] and [(e["change"], e["count"]) for e in events[1]] == [("appeared", 2)]


def test_count_crossings_in_both_directions_with_and_without_label():
    engine = RuleEngine(parse_rules([
        {"name": "busy", "type": "count", "direction": "above", "value": 2},
        {"name": "few_people", "type": "count", "label": "person", "direction": "below", "value": 2}]))
    bus = {"label": "bus", "score": 0.9, "box": [0, 0, 9, 9]}
    frames = [[person(0, 0, 1, 1)],                                   # 1 result, 1 person
              [person(0, 0, 1, 1), person(0, 0, 1, 1), bus],          # 3 results, 2 persons
              [person(0, 0, 1, 1), bus, bus],                         # 3 results, 1 person
              [bus, bus]]                                             # 2 results, 0 persons
    events = [e for f in frames for e in engine.update(f, TS)]
    assert [(e["rule"], e["change"], e["count"], e["active"]) for e in events] == [
        ("few_people", "below", 1, True),
        ("busy", "above", 3, True), ("few_people", "cleared", 2, False),
        ("few_people", "below", 1, True),
        ("busy", "cleared", 2, False)]
    assert all("label" not in e for e in events if e["rule"] == "busy")
    assert events[1]["counts"] == {"person": 2, "bus": 1}


def test_point_in_polygon_on_a_concave_outline():
    u_shape = [(0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3)]
    assert inside((0.5, 2), u_shape) and inside((2.5, 2), u_shape) and inside((1.5, 0.5), u_shape)
    assert not inside((1.5, 2), u_shape) and not inside((4, 1), u_shape)


def test_region_anchor_decides_which_point_must_be_inside():
    floor = [[0, 300], [640, 300], [640, 480], [0, 480]]       # lower part of a 640x480 picture
    engine = RuleEngine(parse_rules([
        {"name": "by_centre", "type": "region", "polygon": floor},
        {"name": "by_feet", "type": "region", "polygon": floor, "anchor": "bottom"}]))
    standing = person(100, 100, 160, 400)                      # centre y=250 (above), feet y=400 (inside)
    events = engine.update([standing], TS)
    assert [(e["rule"], e["change"], e["count"]) for e in events] == [("by_feet", "entered", 1)]


def test_region_with_keypoints_and_normalized_coordinates():
    right_half = [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]
    engine = RuleEngine(parse_rules([{"name": "reach", "type": "region", "polygon": right_half,
                                      "coordinates": "normalized", "anchor": "keypoints"}]))
    arm_out = person(100, 100, 300, 400, keypoints=[
        {"name": "nose", "x": 200, "y": 120, "score": 0.9},
        {"name": "right_wrist", "x": 350, "y": 250, "score": 0.8}])
    faint = person(100, 100, 300, 400, keypoints=[{"name": "right_wrist", "x": 350, "y": 250, "score": 0.1}])
    assert run(engine, [[faint], [arm_out], [faint]], image_size=(600, 400)) == [
        (1, "reach", "entered"), (2, "reach", "left")]
    with pytest.raises(RuleError, match="frame size"):
        RuleEngine(engine.rules).update([arm_out], TS)


def test_segmentation_results_give_the_frame_size_through_their_mask():
    engine = RuleEngine(parse_rules([{"name": "left", "type": "region", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]],
                                      "coordinates": "normalized"}]))
    item = {"label": "person", "area_ratio": 0.1, "box": [10, 10, 90, 190], "mask": {"size": [200, 400], "counts": "x"}}
    assert [e["change"] for e in engine.update([item], TS)] == ["entered"]


def test_ocr_lines_count_by_their_text():
    engine = RuleEngine(parse_rules([{"name": "exit_sign", "type": "presence", "label": "EXIT"}]))
    line = {"text": "EXIT", "score": 0.98, "box": [[0, 0], [40, 0], [40, 10], [0, 10]]}
    assert [e["change"] for e in engine.update([line], TS)] == ["appeared"]


# ---- real pictures through a real detector ---------------------------------------------------
def test_a_sequence_of_real_pictures_gives_the_expected_changes(shared_dir, tmp_path):
    from runtimes.bundle import Bundle
    from runtimes.image import read_image
    from runtimes.tasks import load_task
    from tests.edge.test_contract import convert_fp32

    task = load_task(Bundle.open(convert_fp32(shared_dir, ["PP-PicoDet/picodet_s_320_coco/model.onnx"],
                                              tmp_path / "det")))
    engine = RuleEngine(parse_rules([
        {"name": "bus", "type": "presence", "label": "bus", "min_score": 0.5},
        {"name": "dog", "type": "presence", "label": "dog", "min_score": 0.5}]))
    changes = []
    for picture in ["coco_bus.jpg", "coco_bus.jpg", "coco_dog.jpg", "coco_bus.jpg"]:
        output = task(read_image(shared_dir / "images" / picture))
        for event in engine.update(output.results, contract.utc_timestamp()):
            changes.append((picture, event["rule"], event["change"]))
            assert event["counts"] == {k: v for k, v in event["counts"].items() if v > 0}
    # the bus scene has a bus and no dog, the dog scene a dog and no bus
    assert changes == [("coco_bus.jpg", "bus", "appeared"),
                       ("coco_dog.jpg", "bus", "disappeared"), ("coco_dog.jpg", "dog", "appeared"),
                       ("coco_bus.jpg", "bus", "appeared"), ("coco_bus.jpg", "dog", "disappeared")]
