"""Where the daemon's images come from: one class per kind of source, chosen through `SOURCES`.

A source is given either as a short string (`--source`, or `source:` in the config) or as a mapping
with a `type` (the config's long form, validated by `SourceConfig`).

String form, first rule that matches:

    rtsp://... rtsps://... http://... https://...   stream (the URL as is; options in the long form, or
                                                     `edge run`'s --fps, --every, --transport)
    KIND:TARGET[?KEY=VALUE&...]                      KIND one of folder, list, video, camera, serial;
                                                     KEYs are the long form's fields
    /dev/videoN                                      camera
    PATH ending .mp4 .avi .mkv .mov .webm ...        video
    anything else                                    folder

    folder:/data/in?settle_s=2        list:/data/batch.txt   (one path a line, or a .yaml list)
    video:/data/clip.mp4?every=5      /data/clip.mkv         video:/data/clip.mp4?fps=2
    camera:0?width=1280&height=720    camera:/dev/v4l/by-id/usb-cam-video-index0
    serial:/dev/ttyUSB0?baud=115200&camera=0&trigger=SNAP
        (the grab source: camera=, folder=, list=, video=, stream=URL, or grab=SPEC;
         use the long form for a URL with & in it)

Long form (YAML), one `type` each; every field of the string form's query is a field here:

    {type: folder, path: /data/in, settle_s: 1}
    {type: list, file: batch.txt}  or  {type: list, paths: [a.jpg, b.jpg]}
    {type: video, path: clip.mp4, every: 5}  or  {..., fps: 2}
    {type: camera, device: 0, width: 1280, height: 720, fps: 15, fourcc: MJPG}   (or every: N)
    {type: stream, url: "rtsp://user:pw@cam/ch1", fps: 5 (or every: N), transport: tcp|udp,
     open_timeout_s: 10, read_timeout_s: 5, retry_initial_s: 0.5, retry_max_s: 2, config_retry_s: 60}
    {type: serial, port: /dev/ttyUSB0, baud: 115200, trigger: SNAP, max_age_s: 2, grab: {type: camera, device: 0}}

Folder, list and video hand out every input in order; camera, stream and serial are live: the
pipeline is woken by each frame (it runs at the camera's rate, or at `fps` / every Nth), keeps only
the newest, and a frame replaced while it was busy counts in `dropped` (sources_base.LatestFrameSlot).
Cameras and streams report their connection (sources_capture.CaptureSource).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Union
from urllib.parse import parse_qsl

from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter, ValidationError

from .sources_base import Frame, LiveSource, Source, SourceError
from .sources_files import VIDEO_SUFFIXES, FolderConfig, FolderSource, ListConfig, ListSource, VideoConfig, \
    VideoFileSource
from .sources_live import STREAM_SCHEMES, CameraConfig, CameraSource, StreamConfig, StreamSource, redact_url
from .sources_serial import SerialTriggerConfig, SerialTriggerSource

__all__ = ["Frame", "Source", "LiveSource", "SourceError", "SourceConfig", "SourceField", "SOURCES",
           "FolderSource", "ListSource", "VideoFileSource", "CameraSource", "StreamSource", "SerialTriggerSource",
           "open_source", "parse_source_spec", "source_config", "spec_fields", "with_options"]

SOURCES: dict[str, type[Source]] = {cls.kind: cls for cls in (
    FolderSource, ListSource, VideoFileSource, CameraSource, StreamSource, SerialTriggerSource)}

SourceConfig = Annotated[Union[FolderConfig, ListConfig, VideoConfig, CameraConfig, StreamConfig,
                               SerialTriggerConfig], Field(discriminator="type")]
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SourceConfig)


def spec_fields(spec: str) -> dict[str, Any]:
    """The string form -> the long form's fields, not yet validated (SourceError if it names no kind)."""
    text = spec.strip()
    if not text:
        raise SourceError("empty source")
    url_scheme = _URL_SCHEME.match(text)
    if url_scheme:
        if url_scheme.group(1).lower() in STREAM_SCHEMES:
            return {"type": "stream", "url": text}
        raise SourceError(f"'{redact_url(text)}' is not a source this edge can read "
                          f"(streams: {', '.join(s + '://' for s in STREAM_SCHEMES)}; kinds: {', '.join(SOURCES)})")
    kind, has_kind, rest = text.partition(":")
    if has_kind and kind in SOURCES and kind != "stream":
        model = SOURCES[kind].config_model
        target, _, query = rest.partition("?")
        if not target:
            raise SourceError(f"'{text}' names no {model.target_field} after '{kind}:'")
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
        return {"type": kind, model.target_field: target, **model.expand_options(options)}
    if text.startswith("/dev/video"):
        return {"type": "camera", "device": text}
    if Path(text).suffix.lower() in VIDEO_SUFFIXES:
        return {"type": "video", "path": text}
    return {"type": "folder", "path": text}


def with_options(spec: str, options: dict[str, tuple[str, Any]]) -> str | dict[str, Any]:
    """The string form plus fields a command line gives separately (`--fps 5`: {"fps": ("--fps", 5)});
    SourceError naming the flag when the kind of source has no such field. Unset (None) options are ignored."""
    given = {name: (flag, value) for name, (flag, value) in options.items() if value is not None}
    if not given:
        return spec
    if "fps" in given and "every" in given:
        raise SourceError(f"give {given['every'][0]} or {given['fps'][0]}, not both", field=given["fps"][0])
    fields = spec_fields(spec)
    fields_of = SOURCES[fields["type"]].config_model.model_fields
    for name, (flag, value) in given.items():
        if name not in fields_of:
            kinds = [kind for kind, cls in SOURCES.items() if name in cls.config_model.model_fields]
            raise SourceError(f"{flag} applies to {' and '.join(kinds)} sources, not to a {fields['type']} source",
                              field=flag)
        fields[name] = value
    return fields


def source_config(value: str | dict[str, Any] | BaseModel) -> Any:
    """A validated SourceConfig from the string form, the long form, or a config already made."""
    if isinstance(value, BaseModel):
        return value
    fields = spec_fields(value) if isinstance(value, str) else value
    try:
        return _ADAPTER.validate_python(fields)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        if loc and loc[0] in SOURCES:          # the union's tag, not a field
            loc = loc[1:]
        raise SourceError(first["msg"].removeprefix("Value error, "),
                          field=".".join(["source", *loc])) from None


def parse_source_spec(spec: str) -> Any:
    """The string form -> a validated SourceConfig (SourceError naming the field if it is wrong)."""
    return source_config(spec)


def fields_from_string(value: Any) -> Any:
    """A spec string -> its long-form fields for pydantic to validate (other values pass through)."""
    if not isinstance(value, str):
        return value
    try:
        return spec_fields(value)
    except SourceError as err:
        raise ValueError(str(err).removeprefix("source: ")) from None


# For a config model that embeds a source: takes the string form or the long form, validates either.
SourceField = Annotated[SourceConfig, BeforeValidator(fields_from_string)]


def open_source(spec: str | dict[str, Any] | BaseModel, poll_interval: float = 0.5) -> Source:
    """The source `spec` names (any form), opened; SourceError (a ConfigError) if it cannot be used."""
    config = source_config(spec)
    return SOURCES[config.type](config, poll_interval)
