"""What `edge run` is told: the daemon's typed configuration, from a YAML file or from the short form.

`edge run CONFIG.yaml` validates the file with `load_daemon_config` (every error names the file,
the line and the field); `edge run BUNDLE --source ... --mqtt ... --device-id ...` builds the very
same `DaemonConfig` through `short_form_config`. Relative paths in a file are relative to the file's
folder, so a config and its bundles can move together.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runtimes.bundle import Bundle
from runtimes.errors import BundleError, ConfigError
from runtimes.tasks.preprocess import Preprocess
from runtimes.yamlconfig import load_model, read_yaml

from . import contract
from ..ota.config import OtaConfig
from .ha_discovery import HaPipelineOptions
from .mqtt import parse_mqtt_url
from .rules import RuleConfig, check_unique_names
from .serial_sink import SerialSinkConfig
from .sources import SourceField, with_options

# The folder relative paths are resolved against while a file is validated (None: the working folder).
_BASE_DIR: ContextVar[Path | None] = ContextVar("edge_config_base_dir", default=None)
# The root filesystem absolute paths are read under while a file is validated (None: this system's own):
# `edge service install --root` checks a config against the SD-card image it goes into.
_TARGET_ROOT: ContextVar[Path | None] = ContextVar("edge_config_target_root", default=None)


@contextmanager
def _relative_to(folder: Path | None) -> Iterator[None]:
    token = _BASE_DIR.set(folder)
    try:
        yield
    finally:
        _BASE_DIR.reset(token)


def _resolve(path: Path) -> Path:
    try:
        path = path.expanduser()
    except RuntimeError:                # "~name/..." of a user this system does not have
        raise _problem(f"{path}: this system has no home folder for '{path.parts[0]}'") from None
    if path.is_absolute():
        root = _TARGET_ROOT.get()
        return _fits(path if root is None else root / path.relative_to("/"))
    base = _BASE_DIR.get()
    return _fits(path if base is None else base / path)


def _fits(path: Path) -> Path:
    """A path the system can look at: checking one over NAME_MAX/PATH_MAX raises OSError, not False."""
    if len(os.fsencode(path)) >= 4096 or any(len(os.fsencode(part)) > 255 for part in path.parts):
        raise _problem(f"path too long ({len(str(path))} characters; a name may have 255 bytes, a path 4095)")
    return path


def _problem(message: str) -> PydanticCustomError:
    # A custom error keeps the message as written (a ValueError would get a "Value error, " prefix).
    return PydanticCustomError("edge_config", message)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsFiles(Strict):
    """Certificates for mqtts://. No `ca`: the system's trusted authorities check the broker."""

    ca: Path | None = None          # CA that signed the broker's certificate
    cert: Path | None = None        # this device's client certificate (when the broker asks for one)
    key: Path | None = None         # its private key

    @field_validator("ca", "cert", "key")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = _resolve(value)
        if not value.is_file():
            raise _problem(f"no file at {value}")
        return value

    @model_validator(mode="after")
    def _cert_with_key(self) -> "TlsFiles":
        if (self.cert is None) != (self.key is None):
            raise _problem("a client certificate needs both 'cert' and 'key'")
        return self


class BrokerConfig(Strict):
    url: str                                         # mqtt://HOST[:1883] or mqtts://HOST[:8883]
    tls: TlsFiles | None = None
    username: str | None = None
    password: str | None = None
    password_env: str | None = None                  # name of an environment variable holding it
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive: int = Field(30, ge=5, le=3600)        # seconds

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parse_mqtt_url(value)
        except ConfigError as err:
            raise _problem(str(err).removeprefix("mqtt: ")) from None
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as a number and `3.1.1` as text; both mean the version.
        return str(value) if isinstance(value, (int, float)) else value

    @model_validator(mode="after")
    def _consistent(self) -> "BrokerConfig":
        if self.password is not None and self.password_env is not None:
            raise _problem("give 'password' or 'password_env', not both")
        if (self.password is not None or self.password_env is not None) and self.username is None:
            raise _problem("a password needs a 'username'")
        if self.tls is not None and not self.url.startswith("mqtts://"):
            raise _problem("'tls' needs an mqtts:// broker URL")
        return self

    def password_value(self) -> str | None:
        """The password, read from the environment when `password_env` names a variable."""
        if self.password_env is None:
            return self.password
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(f"environment variable {self.password_env} is not set",
                              field="broker.password_env")
        return value


class SpoolConfig(Strict):
    max_messages: int = Field(100_000, ge=100)
    max_mb: float = Field(100.0, gt=0)
    # normal: survives the daemon being killed; full: also a power cut, at more writes to flash.
    synchronous: Literal["normal", "full"] = "normal"


# Measured with bench/daemon_throughput.py --in-flight (see docs/config.md).
IN_FLIGHT_DEFAULT = 1


class PipelineConfig(Strict):
    name: str | None = None             # topic level; default: the bundle manifest's `pipeline`
    bundle: Path
    source: SourceField                  # string form (`edge run --source`) or long form; see sources.py
    poll_interval: float = Field(0.5, gt=0, le=60)    # seconds between looks at an idle source
    threshold: float | None = Field(None, ge=0, le=1)  # results whose `score` is below it are dropped
    rate_limit: float | None = Field(None, gt=0)      # at most this many frames per second
    qos: Literal[0, 1, 2] = 1
    # frames run at once (decode and pre-processing of one overlap the inference of another); results still
    # go out in input order. Pipelines with a Paddle Lite model run one at a time whatever this says.
    in_flight: int = Field(IN_FLIGHT_DEFAULT, ge=1, le=8)
    rules: list[RuleConfig] = Field(default_factory=list)
    home_assistant: HaPipelineOptions = Field(default_factory=HaPipelineOptions)   # with ha_discovery
    # model role -> pre-processing op -> parameters replacing the bundle's (e.g. the OCR det's small-input resize)
    preprocess: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    @field_validator("bundle")
    @classmethod
    def _bundle_folder(cls, value: Path) -> Path:
        value = _resolve(value)
        if not (value / "manifest.json").is_file():
            what = "has no manifest.json" if value.is_dir() else "does not exist"
            raise _problem(f"bundle folder {value} {what} (make one with 'edge convert')")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _pipeline_name(value)

    @field_validator("source")
    @classmethod
    def _source_paths(cls, value: Any) -> Any:
        return _resolve_source_paths(value)

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, value: list[Any]) -> list[Any]:
        try:
            check_unique_names(value)
        except ConfigError as err:
            raise _problem(str(err).removeprefix("rules: ")) from None
        return value

    @model_validator(mode="after")
    def _default_name(self) -> "PipelineConfig":
        if self.name is None:
            try:
                manifest_name = Bundle.open(self.bundle, verify=False).manifest.pipeline
            except BundleError as err:
                raise _problem(str(err)) from None
            self.name = _pipeline_name(manifest_name, " (the bundle manifest's; set 'name')")
        return self

    @model_validator(mode="after")
    def _preprocess_fits_bundle(self) -> "PipelineConfig":
        if self.preprocess:
            try:
                bundle = Bundle.open(self.bundle, verify=False).with_preprocess(self.preprocess)
                for role in self.preprocess:
                    Preprocess(bundle.manifest.model(role).preprocess)      # names and types of the parameters
            except BundleError as err:
                raise _problem(f"preprocess: {err}") from None
        return self


class SinksConfig(Strict):
    serial: SerialSinkConfig | None = None


class DaemonConfig(Strict):
    device_id: str
    broker: BrokerConfig
    state_dir: Path                                   # spool, ledger, snapshots
    bundles_dir: Path | None = None                   # where `reload` may find bundles by name
    metrics_interval: float = Field(60.0, ge=0)       # seconds; 0 turns metrics off
    ha_discovery: bool = False
    drain_timeout: float = Field(10.0, ge=0)          # seconds to wait for acks when stopping
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    pipelines: list[PipelineConfig] = Field(min_length=1)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    group: str | None = None                          # for group rollouts (`edge ota push --group`)
    ota: OtaConfig | None = None                      # present: updates over the air (docs/ota.md)

    @field_validator("device_id")
    @classmethod
    def _device(cls, value: str) -> str:
        return _segment(value, "device id")

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return None if value is None else _segment(value, "group")

    @field_validator("bundles_dir")
    @classmethod
    def _bundles_dir(cls, value: Path | None) -> Path | None:
        return None if value is None else _resolve(value)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        value = _resolve(value)
        if value.exists() and not value.is_dir():
            raise _problem(f"{value} exists and is not a folder")
        return value

    @model_validator(mode="after")
    def _ota_needs_bundles_dir(self) -> "DaemonConfig":
        if self.ota is not None and self.bundles_dir is None:
            raise _problem("'ota' needs 'bundles_dir' (the folder holding <name>/current of each bundle)")
        if self.ota is not None:
            self.ota.trusted_keys = [_resolve(p) for p in self.ota.trusted_keys]
        return self

    @field_validator("pipelines")
    @classmethod
    def _unique_pipelines(cls, value: list[PipelineConfig]) -> list[PipelineConfig]:
        seen: set[str] = set()
        for pipeline in value:
            if pipeline.name in seen:
                raise _problem(f"two pipelines are named '{pipeline.name}'; give each a distinct 'name'")
            seen.add(pipeline.name or "")
        return value


def _segment(value: str, what: str) -> str:
    try:
        return contract.check_topic_segment(value, what)
    except ConfigError as err:
        raise _problem(str(err).removeprefix(f"{what}: ")) from None


def _pipeline_name(value: str, note: str = "") -> str:
    try:
        return contract.check_pipeline_name(value)
    except ConfigError as err:
        raise _problem(str(err).removeprefix("pipeline: ") + note) from None


# Path fields of the source configs, resolved like every other path of the file.
_SOURCE_PATH_FIELDS = ("path", "file")


def _resolve_source_paths(config: Any) -> Any:
    updates: dict[str, Any] = {}
    for name in _SOURCE_PATH_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, Path):
            updates[name] = _resolve(value)
    if isinstance(getattr(config, "paths", None), list):
        updates["paths"] = [_resolve(p) for p in config.paths]
    if isinstance(getattr(config, "grab", None), BaseModel):      # a serial trigger's grab source
        updates["grab"] = _resolve_source_paths(config.grab)
    return config.model_copy(update=updates) if updates else config


def load_broker_config(path: str | Path) -> BrokerConfig:
    """A `broker:` section in a file of its own (operator tools: `edge fleet --broker`); relative TLS paths
    are from the file's folder, as in a daemon config."""
    path = Path(path)
    with _relative_to(path.resolve().parent):
        return load_model(BrokerConfig, path)


def load_daemon_config(path: str | Path, root: Path | None = None) -> DaemonConfig:
    """Read and validate a daemon config file; a ConfigError names file, line and field.

    `root`: the root filesystem the config will run in (a mounted SD-card image): its absolute paths
    are checked under it, and the paths in the result are those host paths."""
    path = Path(path)
    data, node = read_yaml(path)
    token = _TARGET_ROOT.set(None if root is None or Path(root).resolve() == Path("/") else Path(root).resolve())
    try:
        with _relative_to(path.resolve().parent):
            return load_model(DaemonConfig, path, data=data, node=node)
    finally:
        _TARGET_ROOT.reset(token)


def default_state_dir(device_id: str) -> Path:
    """Where the short form keeps its state: $XDG_STATE_HOME/edge/<device> (~/.local/state/...)."""
    root = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(root) / "edge" / device_id


def short_form_config(*, bundle: Path, source: str, mqtt_url: str, device_id: str,
                      state_dir: Path | None = None, pipeline: str | None = None, qos: int = 1,
                      poll_interval: float = 0.5, drain_timeout: float = 10.0,
                      metrics_interval: float = 60.0, ha_discovery: bool = False,
                      ha_labels: list[str] | None = None, ha_image_interval: float | None = None,
                      ha_image_width: int | None = None, fps: float | None = None, every: int | None = None,
                      transport: str | None = None) -> DaemonConfig:
    """`edge run BUNDLE --source ... --mqtt ... --device-id ...` as a DaemonConfig of one pipeline."""
    source = with_options(source, {"fps": ("--fps", fps), "every": ("--every", every),
                                   "transport": ("--transport", transport)})
    data: dict[str, Any] = {
        "device_id": device_id, "broker": {"url": mqtt_url},
        "state_dir": state_dir if state_dir is not None else default_state_dir(str(device_id)),
        "metrics_interval": metrics_interval, "ha_discovery": ha_discovery, "drain_timeout": drain_timeout,
        "pipelines": [{"name": pipeline, "bundle": bundle, "source": source, "qos": qos,
                       "poll_interval": poll_interval}],
    }
    ha = {key: value for key, value in (("labels", ha_labels), ("image_interval", ha_image_interval),
                                         ("image_width", ha_image_width)) if value is not None}
    if ha:
        data["pipelines"][0]["home_assistant"] = ha
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as err:
        first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        loc = ".".join(str(p) for p in first["loc"])
        if loc.startswith("pipelines.0.source.") and loc.rsplit(".", 1)[-1] in _SOURCE_FLAGS:
            raise ConfigError(first["msg"], field=_SOURCE_FLAGS[loc.rsplit(".", 1)[-1]]) from None
        flag = next((f for prefix, f in _SHORT_FORM_FLAGS.items() if loc == prefix or loc.startswith(prefix + ".")),
                    loc)
        raise ConfigError(first["msg"], field=flag) from None


# Config fields -> the flag that sets them, so a short-form error names what the user typed.
_SOURCE_FLAGS = {"fps": "--fps", "every": "--every", "transport": "--transport"}
_SHORT_FORM_FLAGS = {"broker.url": "--mqtt", "device_id": "--device-id", "state_dir": "--state-dir",
                     "pipelines.0.bundle": "bundle", "pipelines.0.source": "--source",
                     "pipelines.0.name": "--pipeline", "pipelines.0.qos": "--qos",
                     "pipelines.0.poll_interval": "--poll-interval", "drain_timeout": "--drain-timeout",
                     "metrics_interval": "--metrics-interval", "pipelines.0.home_assistant.labels": "--ha-labels",
                     "pipelines.0.home_assistant.image_interval": "--ha-image-interval",
                     "pipelines.0.home_assistant.image_width": "--ha-image-width"}
