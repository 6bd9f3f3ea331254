"""What the daemon keeps retained for dashboards: the pipeline state (summaries, rules, persistence across
restarts), the annotated frame for Home Assistant's image entity, and the record of retained topics."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.daemon import contract
from edge.daemon.ha_cleanup import RetainedTopics
from edge.daemon.ha_image import FrameImages, annotated_jpeg
from edge.daemon.pipeline_state import PipelineState, StateFile, summarize
from edge.daemon.rules import RuleEngine, parse_rules

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cam-05"
BOXES = [{"label": "person", "score": 0.91, "box": [10.0, 20.0, 200.0, 400.0]},
         {"label": "bus", "score": 0.85, "box": [300.0, 50.0, 600.0, 400.0]},
         {"label": "person", "score": 0.6, "box": [420.0, 120.0, 500.0, 380.0]}]


def schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((REPO_ROOT / contract.SCHEMA_FILES[contract.STATE_SCHEMA])
                                                      .read_text(encoding="utf-8")))


def result(results: list[dict], source: str = "/in/a.jpg") -> dict:
    return contract.result_message(device=DEVICE, pipeline="door", models=["m"], source=source, seq=3,
                                   latency_ms={"pre": 1.0, "infer": 2.0, "post": 3.0}, results=results)


def test_summary_counts_labels_and_keeps_text_bounded():
    message = result(BOXES)
    summary = summarize("detection", message)
    assert summary == {"id": message["id"], "ts": message["ts"], "seq": 3, "source": "/in/a.jpg", "count": 3,
                       "counts": {"person": 2, "bus": 1}, "label": "person", "score": 0.91}
    lines = [{"text": "EXIT", "score": 0.9, "box": [[0, 0], [1, 0], [1, 1], [0, 1]]}] * 100
    ocr = summarize("ocr", result(lines))
    assert len(ocr["text"]) == 255 and ocr["counts"] == {} and ocr["score"] == 0.9
    assert summarize("segmentation", result([{"label": "person", "area_ratio": 0.25, "box": [0, 0, 1, 1]}]))[
        "area_percent"] == 25.0


def test_state_messages_follow_results_errors_and_rules_and_validate():
    engine = RuleEngine(parse_rules([{"name": "crowd", "type": "count", "label": "person", "direction": "above",
                                      "value": 1}]))
    state = PipelineState("door", "detection", ["crowd"])
    assert not state.known and not state.changed()          # nothing to say before the first input
    message = result(BOXES)
    engine.update(message["results"], message["ts"])
    state.record_result(message, engine.states())
    assert state.changed()
    first = state.message(DEVICE, paused=False, threshold=0.5)
    schema().validate(first)
    assert not state.changed()
    assert (first["rules"], first["problem"], first["errors"], first["threshold"]) == ({"crowd": True}, False, 0, 0.5)
    error = contract.error_message(device=DEVICE, pipeline="door", source="/in/b.jpg", error="truncated", seq=4)
    state.record_error(error)
    second = state.message(DEVICE, paused=True, threshold=None)
    schema().validate(second)
    assert second["problem"] and second["errors"] == 1 and second["last_error"]["source"] == "/in/b.jpg"
    assert second["last_result"] == first["last_result"]     # an error does not erase the last result


def test_a_restart_keeps_the_last_result_and_starts_rules_off(tmp_path):
    before = PipelineState("door", "detection", ["crowd"])
    before.record_result(result(BOXES), {"crowd": True})
    StateFile(tmp_path).save({"door": before.saved()}, force=True)

    after = PipelineState("door", "detection", ["crowd"])
    after.restore(StateFile(tmp_path).load().get("door"))
    assert after.known and after.changed()                  # published at start
    message = after.message(DEVICE, paused=False, threshold=None)
    assert message["rules"] == {"crowd": False}             # the engine starts off, and says so
    assert message["last_result"] == before.saved()["last_result"]

    other_task = PipelineState("door", "ocr", [])
    other_task.restore(StateFile(tmp_path).load().get("door"))
    assert not other_task.known                             # a detection summary would mislead an OCR sensor


def test_the_state_file_is_written_only_when_it_changed(tmp_path):
    file = StateFile(tmp_path)
    assert file.save({"door": {"x": 1}}, force=True)
    assert not file.save({"door": {"x": 1}}, force=True)
    assert not file.save({"door": {"x": 2}})                # within the interval after a write
    assert file.save({"door": {"x": 2}}, force=True)
    (tmp_path / "pipeline_state.json").write_text("{broken")
    assert StateFile(tmp_path).load() == {}


def test_the_image_is_bounded_in_size_and_rate(shared_dir):
    image = cv2.imread(str(shared_dir / "images" / "coco_bus.jpg"))
    jpeg = annotated_jpeg("detection", image, BOXES, max_width=320)
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[1] == 320 and abs(picture.shape[0] - round(image.shape[0] * 320 / image.shape[1])) <= 1
    assert not np.array_equal(cv2.resize(image, picture.shape[1::-1]), picture)      # the boxes are drawn

    now = [100.0]
    frames = FrameImages("detection", interval=2.0, max_width=320, clock=lambda: now[0])
    assert frames.take() is None                             # nothing offered yet
    frames.offer(image, BOXES)
    assert frames.take() is not None
    small = image[:100, :100]
    frames.offer(image, BOXES)
    frames.offer(small, [])                                  # the newest of a burst is the one shown
    assert frames.take() is None                             # within the interval
    now[0] += 2.0
    newest = cv2.imdecode(np.frombuffer(frames.take(), np.uint8), cv2.IMREAD_COLOR)
    assert newest.shape[:2] == (100, 100) and frames.made == 2
    assert frames.take() is None


def test_the_record_of_retained_topics_clears_only_what_is_gone(tmp_path):
    record = RetainedTopics(tmp_path)
    assert record.update({"a", "b"}) == []
    record.confirm()
    again = RetainedTopics(tmp_path)                          # the next start
    assert again.update({"b", "c"}) == ["a"]
    assert RetainedTopics(tmp_path).recorded == {"a", "b", "c"}     # until the empty payload went out
    again.confirm()
    assert RetainedTopics(tmp_path).recorded == {"b", "c"}
    assert RetainedTopics(None).update({"x"}) == []           # no state folder: nothing to remember


@pytest.mark.parametrize("task", ["detection", "ocr"])
def test_every_summary_validates(task):
    items = BOXES if task == "detection" else [{"text": "PAIN", "score": 0.98, "box": [[0, 0], [9, 0], [9, 9], [0, 9]]}]
    state = PipelineState("door", task, [])
    state.record_result(result(items), {})
    schema().validate(state.message(DEVICE, paused=False, threshold=None))


# ---- the options, in the file and by flags -------------------------------------------------------------
def manifest_only_bundle(folder: Path) -> Path:
    """As far as the config can tell, a bundle (the config reads only its manifest's pipeline name)."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "pipeline": "door", "task": "detection",
                                                      "runtime": {}, "models": [],
                                                      "provenance": {"created": "test", "profile": "x86", "tools": {}}}))
    return folder


def test_home_assistant_options_by_flags_and_in_the_file(tmp_path, capsys):
    from edge.cli import main as edge_main
    from edge.commands.run import add_parser, config_from_args
    from edge.daemon.config import load_daemon_config
    import argparse
    from runtimes.errors import ConfigError

    bundle = manifest_only_bundle(tmp_path / "bundle")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    short = ["run", str(bundle), "--source", str(tmp_path), "--mqtt", "mqtt://127.0.0.1:1883", "--device-id", "d",
             "--ha-discovery", "--ha-labels", "person, car", "--ha-image-interval", "0", "--ha-image-width", "320"]
    options = config_from_args(parser.parse_args(short)).pipelines[0].home_assistant
    assert (options.labels, options.image_interval, options.image_width) == (["person", "car"], 0.0, 320)
    assert edge_main([*short[:-6], "--ha-labels", "a b,a_b", "--check"]) == 2
    assert "--ha-labels" in capsys.readouterr().err
    config = tmp_path / "edge.yaml"
    config.write_text(f"""\
device_id: d
broker: {{url: "mqtt://127.0.0.1:1883"}}
state_dir: {tmp_path / "state"}
pipelines:
  - bundle: {bundle}
    source: {tmp_path}
    home_assistant:
      labels: [person]
      image_width: 10
""")
    with pytest.raises(ConfigError, match=r"edge.yaml:9: pipelines.0.home_assistant.image_width"):
        load_daemon_config(config)
