"""The daemon's configuration: the YAML file, the short form, and `edge run --check`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.cli import main as edge_main
from edge.daemon.config import BrokerConfig, DaemonConfig, load_daemon_config, short_form_config
from runtimes.errors import ConfigError

def fake_bundle(folder: Path, pipeline: str = "shelf") -> Path:
    """A bundle folder as far as the config can tell (the config reads only the manifest's pipeline name;
    the daemon opens and verifies the bundle itself, see test_daemon)."""
    folder.mkdir(parents=True)
    manifest = {"schema_version": 1, "pipeline": pipeline, "task": "ocr", "runtime": {}, "models": [],
                "provenance": {"created": "test", "profile": "x86", "tools": {}}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


FULL = """\
device_id: cam-07
broker:
  url: mqtts://broker.example:8883
  tls: {ca: certs/ca.crt, cert: certs/cam.crt, key: certs/cam.key}
  username: cam-07
  password_env: EDGE_MQTT_PASSWORD
  protocol: 5
  keepalive: 20
state_dir: state
metrics_interval: 15
ha_discovery: true
spool: {max_messages: 5000, max_mb: 8}
pipelines:
  - bundle: bundles/ocr
    source: in
    threshold: 0.6
    rate_limit: 2
    rules:
      - {type: presence, name: any_text, label: EXIT}
  - name: door
    bundle: bundles/ocr
    source: {type: camera, device: 0, width: 640}
    rules:
      - {type: count, name: crowd, direction: above, value: 3}
sinks:
  serial: {port: /dev/ttyUSB0, baud: 9600, format: "{pipeline} {count}"}
"""


@pytest.fixture
def config_dir(tmp_path) -> Path:
    fake_bundle(tmp_path / "bundles" / "ocr")
    (tmp_path / "in").mkdir()
    (tmp_path / "certs").mkdir()
    for name in ("ca.crt", "cam.crt", "cam.key"):
        (tmp_path / "certs" / name).write_text("PEM\n")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_config_is_read_with_paths_relative_to_the_file(config_dir, monkeypatch):
    config = load_daemon_config(write(config_dir, FULL))
    assert config.device_id == "cam-07" and config.broker.protocol == "5"
    assert config.broker.tls.ca == config_dir / "certs" / "ca.crt"
    assert config.state_dir == config_dir / "state"
    first, door = config.pipelines
    assert (first.name, first.bundle, first.threshold, first.rate_limit) == \
        ("shelf", config_dir / "bundles" / "ocr", 0.6, 2)     # name from the bundle manifest
    assert first.source.type == "folder" and first.source.path == config_dir / "in"
    assert (door.name, door.source.type, door.source.device, door.rules[0].type) == ("door", "camera", 0, "count")
    assert config.sinks.serial.baud == 9600
    assert (config.spool.max_messages, config.spool.max_mb) == (5000, 8)
    # The password is read from the environment when it is needed, never stored in the file.
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "s3cret")
    assert config.broker.password_value() == "s3cret"
    monkeypatch.delenv("EDGE_MQTT_PASSWORD")
    with pytest.raises(ConfigError, match="EDGE_MQTT_PASSWORD is not set"):
        config.broker.password_value()


# (text replaced, replacement, a piece of the line the error must point at, field, words of the message)
@pytest.mark.parametrize("old, new, at, field, message", [
    ("metrics_interval: 15", "metrics_interval: -1", "metrics_interval", "metrics_interval",
     "greater than or equal to 0"),
    ("ha_discovery: true", "ha_discovery: true\ncolour: red", "colour", "colour", "unknown field"),
    ("    threshold: 0.6", "    threshold: 1.5", "threshold", "pipelines.0.threshold", "less than or equal to 1"),
    ("  - bundle: bundles/ocr\n    source: in", "  - bundle: bundles/none\n    source: in", "bundles/none",
     "pipelines.0.bundle", "does not exist"),
    ("  - name: door", "  - name: shelf", "pipelines:", "pipelines", "two pipelines are named 'shelf'"),
    ("  - name: door", "  - name: cmd", "name: cmd", "pipelines.1.name", "device topics"),
    ("url: mqtts://broker.example:8883", "url: mqtt://broker.example", "broker:", "broker", "needs an mqtts://"),
    ("url: mqtts://broker.example:8883", "url: tcp://broker", "url:", "broker.url", "must start with mqtt://"),
    ("  password_env: EDGE_MQTT_PASSWORD", "  password_env: X\n  password: y", "broker:", "broker", "not both"),
    ("device_id: cam-07", "device_id: cam/07", "device_id", "device_id", "not a usable device id"),
    ("direction: above", "direction: sideways", "direction: sideways", "pipelines.1.rules.0.count.direction",
     "'above' or 'below'"),
    ("source: {type: camera, device: 0, width: 640}", "source: {type: camera, device: 0, width: -5}", "width: -5",
     "pipelines.1.source.camera.width", "greater than 0"),
    ('format: "{pipeline} {count}"', 'format: "{pipeline} {secret.__class__}"', "format:", "sinks.serial.format",
     "not one of"),
    ("  tls: {ca: certs/ca.crt, cert: certs/cam.crt, key: certs/cam.key}", "  tls: {ca: certs/none.crt}",
     "none.crt", "broker.tls.ca", "no file at"),
    ("  tls: {ca: certs/ca.crt, cert: certs/cam.crt, key: certs/cam.key}", "  tls: {cert: certs/cam.crt}",
     "tls:", "broker.tls", "needs both"),
])
def test_config_errors_name_file_line_and_field(config_dir, old, new, at, field, message):
    assert old in FULL
    text = FULL.replace(old, new)
    line = next(number for number, content in enumerate(text.splitlines(), 1) if at in content)
    path = write(config_dir, text)
    with pytest.raises(ConfigError) as err:
        load_daemon_config(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field), str(err.value)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: {field}: ") and "\n" not in str(err.value)


def test_short_form_builds_the_same_config_as_a_file(tmp_path):
    bundle = fake_bundle(tmp_path / "b")
    (tmp_path / "in").mkdir()
    short = short_form_config(bundle=bundle, source=str(tmp_path / "in"), mqtt_url="mqtt://127.0.0.1:1884",
                              device_id="cam-01", state_dir=tmp_path / "state", metrics_interval=5,
                              ha_discovery=True)
    from_file = load_daemon_config(write(tmp_path, f"""\
device_id: cam-01
broker: {{url: "mqtt://127.0.0.1:1884"}}
state_dir: {tmp_path / 'state'}
metrics_interval: 5
ha_discovery: true
pipelines:
  - {{bundle: {bundle}, source: {tmp_path / 'in'}}}
"""))
    assert isinstance(short, DaemonConfig)
    assert short.model_dump() == from_file.model_dump()


@pytest.mark.parametrize("change, flag", [
    ({"mqtt_url": "http://broker:1883"}, "--mqtt"),
    ({"mqtt_url": "mqtt://broker:99999"}, "--mqtt"),
    ({"device_id": "cam/01"}, "--device-id"),
    ({"device_id": "+"}, "--device-id"),
    ({"pipeline": "ocr#1"}, "--pipeline"),
    ({"qos": 3}, "--qos"),
    ({"source": "ftp://host/x"}, "--source"),
])
def test_short_form_errors_name_the_flag(tmp_path, change, flag):
    values = {"bundle": fake_bundle(tmp_path / "b"), "source": str(tmp_path), "mqtt_url": "mqtt://127.0.0.1:1883",
              "device_id": "cam-01", "state_dir": tmp_path / "state", **change}
    with pytest.raises(ConfigError) as err:
        short_form_config(**values)
    assert err.value.field == flag and "\n" not in str(err.value)


def test_broker_settings_that_contradict_each_other_are_refused():
    with pytest.raises(ValueError, match="needs a 'username'"):
        BrokerConfig(url="mqtt://b", password="x")
    assert BrokerConfig(url="mqtts://b").password_value() is None


def test_check_says_ok_or_one_line_with_file_line_field(config_dir, capsys):
    good = write(config_dir, FULL)
    assert edge_main(["run", "--check", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: ok: device cam-07, 2 pipeline(s): shelf (folder), door (camera)")

    write(config_dir, FULL.replace("    threshold: 0.6", "    threshold: high"))
    assert edge_main(["run", "--check", str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"edge run: error: {good}:16: pipelines.0.threshold: Input should be a valid number, " \
                  "unable to parse string as a number"

    (config_dir / "broken.yaml").write_text("device_id: [unclosed\n")
    assert edge_main(["run", "--check", str(config_dir / "broken.yaml")]) == 2
    assert "broken.yaml:2: invalid YAML" in capsys.readouterr().err


def test_short_form_flags_do_not_mix_with_a_config_file(config_dir, capsys):
    good = write(config_dir, FULL)
    assert edge_main(["run", str(good), "--device-id", "x", "--check"]) == 2
    assert "--device-id belong to the short form" in capsys.readouterr().err
    shutil.rmtree(config_dir / "in")
    assert edge_main(["run", str(config_dir / "bundles" / "ocr"), "--check"]) == 2
    assert "short form needs --source, --mqtt, --device-id" in capsys.readouterr().err
