"""Commands sent to the daemon over MQTT (`edge/<device>/cmd/<name>`), checked before anything acts.

A command's payload is a JSON object validated by its own strict model (no extra fields, no type
coercion, no NaN); anything else gets an error reply and reaches no handler. Nothing a command
carries is ever run as a shell command, and the only thing that can name a file is `reload`'s
`bundle`: a plain folder name that must resolve to a folder directly inside the daemon's bundles
folder (no separators, no `..`, no symlink leading out).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from runtimes.errors import EdgeError, one_line

from . import contract

log = logging.getLogger("edge.daemon.commands")

MAX_PAYLOAD_BYTES = 64 * 1024
REQUEST_ID_MAX = 128
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")    # one topic level, as in contract


def _pipeline_name(value: str) -> str:
    if not _PLAIN_NAME.fullmatch(value):
        raise PydanticCustomError("pipeline_name", "must be a pipeline name: 1-64 letters, digits, '_', '.' "
                                                   "or '-', starting with a letter or digit")
    return value


def _bundle_name(value: str) -> str:
    # a name, never a path: no separators, no '..', nothing hidden, nothing a shell would read
    if not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise PydanticCustomError("bundle_name", "must be a folder name in the bundles folder: 1-64 letters, "
                                                 "digits, '_', '.' or '-', starting with a letter or digit, "
                                                 "without '..'")
    return value


PipelineName = Annotated[str, AfterValidator(_pipeline_name)]
BundleName = Annotated[str, AfterValidator(_bundle_name)]


class CommandError(EdgeError):
    """A command that cannot be carried out; its message goes back in the error reply."""


class _Command(BaseModel):
    # strict: "0.5" is not a number and 1 is not a bool; a sender learns its mistake instead of a guess
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    request_id: str | None = Field(None, min_length=1, max_length=REQUEST_ID_MAX,
                                   description="echoed in the reply so a sender can match it")


class PipelineOptional(_Command):
    pipeline: PipelineName | None = Field(None, description="one pipeline; all when absent")


class PauseCommand(PipelineOptional):
    """Stop taking frames (live sources keep only the newest; folders wait)."""


class ResumeCommand(PipelineOptional):
    """Take frames again."""


class SetThresholdCommand(_Command):
    pipeline: PipelineName
    value: float = Field(ge=0, le=1, description="minimum score of a published result")


class SnapshotCommand(_Command):
    pipeline: PipelineName


class ReloadCommand(_Command):
    pipeline: PipelineName
    bundle: BundleName | None = Field(None, description="a folder name inside the daemon's bundles folder; "
                                                       "absent: reload the pipeline's current bundle")


class OtaCommand(_Command):
    """An update offer (docs/ota.md): the package's identity and where to fetch it (chunks or a URL)."""
    offer: str = Field(pattern=r"^[0-9a-f]{16}$", description="the package's sha256, first 16 hex digits")
    name: BundleName
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    size: int = Field(ge=1, le=8 << 30)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    chunk_size: int = Field(ge=1024, le=4 << 20)
    url: str | None = Field(None, pattern=r"^https?://[^\s]+$", max_length=2048,
                            description="fetch from here instead of chunks over MQTT")


COMMAND_MODELS: dict[str, type[_Command]] = {
    "pause": PauseCommand, "resume": ResumeCommand, "set_threshold": SetThresholdCommand,
    "snapshot": SnapshotCommand, "reload": ReloadCommand, "ota": OtaCommand,
}

Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


class CommandRouter:
    """name + raw payload -> validated arguments -> handler -> `edge.reply/1` dict (never raises).

    `handlers` maps command names (keys of COMMAND_MODELS) to callables taking the validated
    arguments (without `request_id`; `reload` also gets `bundle_path`, the resolved folder) and
    returning a JSON-able dict. A handler raises EdgeError for a refusal a user should read.
    """

    def __init__(self, handlers: dict[str, Handler], bundles_dir: Path | str | None = None):
        unknown = sorted(set(handlers) - set(COMMAND_MODELS))
        if unknown:
            raise ValueError(f"no such command(s) {unknown}; known: {', '.join(COMMAND_MODELS)}")
        self.handlers = dict(handlers)
        self.bundles_dir = Path(bundles_dir) if bundles_dir is not None else None

    def handle_message(self, device: str, topic: str, payload: bytes) -> tuple[str, dict[str, Any]] | None:
        """A message on `command_filter(device)` -> (reply topic, reply); None if it is not a command
        this daemon can answer on a topic of its own (e.g. a name that is not a plain topic level)."""
        name = contract.command_name(device, topic)
        if name is None:
            return None
        try:
            reply_topic = contract.reply_topic(device, name)
        except EdgeError:
            log.warning("ignored a command with an unusable name %r", name[:64])
            return None
        return reply_topic, self.handle(name, payload)

    def handle(self, name: str, payload: bytes) -> dict[str, Any]:
        request_id = None
        try:
            data = parse_payload(payload)
            request_id = _request_id(data)
            arguments = self._validate(name, data)
            handler = self.handlers.get(name)
            if handler is None:
                raise CommandError(f"command '{name}' is not available on this daemon")
            if name == "reload" and arguments.get("bundle") is not None:
                arguments["bundle_path"] = str(self.resolve_bundle(arguments["bundle"]))
            result = handler(arguments)
        except EdgeError as err:
            log.warning("command %r refused: %s", name[:64], one_line(str(err)))
            return contract.reply_message(command=_printable(name), ok=False, error=one_line(str(err)),
                                          request_id=request_id)
        except Exception as err:   # a handler's bug must not take the daemon down, nor go unanswered
            log.exception("command %r failed", name[:64])
            return contract.reply_message(command=_printable(name), ok=False,
                                          error=f"internal error: {type(err).__name__}", request_id=request_id)
        log.info("command %s done", name)
        return contract.reply_message(command=name, ok=True, result=result or {}, request_id=request_id)

    def _validate(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        model = COMMAND_MODELS.get(name)
        if model is None:
            raise CommandError(f"unknown command '{_printable(name)}'; known: {', '.join(COMMAND_MODELS)}")
        try:
            command = model.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "payload"
            raise CommandError(f"{name}: {field}: {first['msg']}") from None
        return command.model_dump(exclude={"request_id"})

    def resolve_bundle(self, name: str) -> Path:
        """A validated bundle name -> its folder, directly inside the bundles folder (symlinks resolved)."""
        if self.bundles_dir is None:
            raise CommandError("this daemon has no bundles folder; reload without 'bundle' reloads the current one")
        root = self.bundles_dir.resolve()
        path = (root / name).resolve()
        if path.parent != root:
            raise CommandError(f"bundle '{name}' leads outside the bundles folder")
        if not path.is_dir():
            raise CommandError(f"no bundle '{name}' in the bundles folder")
        return path


def parse_payload(payload: bytes) -> dict[str, Any]:
    """Raw MQTT payload -> a JSON object; empty means {} (so `mosquitto_pub -n` can pause)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit")
    if not payload.strip():
        return {}
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8 text") from None
    except RecursionError:
        raise CommandError("payload is nested too deeply") from None
    except ValueError as err:
        raise CommandError(f"payload is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CommandError(f"payload must be a JSON object, not {type(data).__name__}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _request_id(data: dict[str, Any]) -> str | None:
    # echoed even when the rest of the payload is wrong, so the sender can match the error
    value = data.get("request_id")
    return value if isinstance(value, str) and 0 < len(value) <= REQUEST_ID_MAX else None


def _printable(name: str) -> str:
    """A command name as it can be shown (it comes from a topic a stranger may have chosen)."""
    cleaned = "".join(c if c.isprintable() else "?" for c in name[:64])
    return cleaned or "?"
