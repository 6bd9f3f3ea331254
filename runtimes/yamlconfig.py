"""Load YAML into typed (pydantic) models, reporting errors with file, line and field.

PyYAML's composed node tree keeps the line of every key; a pydantic error gives the path of
the bad field. Walking that path through the node tree yields the line to report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node along `loc` that exists in the YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            key_node = next((k for k, v in node.value if k.value == str(key)), None)
            if match is None:
                continue    # a pydantic-only level (a union's tag) that has no key in the file
            line, node = key_node.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def read_yaml(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file into (data, node tree); a syntax error names the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read file ({err})", path=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        raise ConfigError(f"invalid YAML: {err.problem}", path=str(path), line=line) from None
    except yaml.reader.ReaderError as err:     # a control character; PyYAML's message spans two lines
        code = err.character if isinstance(err.character, int) else ord(err.character)
        raise ConfigError(f"invalid YAML: character #x{code:04x}: {err.reason}", path=str(path),
                          line=text.count("\n", 0, err.position) + 1) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {' '.join(str(err).split())}", path=str(path)) from None
    return data, node


def validation_to_config_error(err: ValidationError, path: str | Path,
                               node: yaml.Node | None) -> ConfigError:
    """Turn the first pydantic error into a ConfigError pointing at the YAML line."""
    # A misspelt key shows up twice (unknown key + missing field); the unknown key is the real mistake.
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = tuple(first["loc"])
    field = ".".join(str(p) for p in loc) or None
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field (check the spelling)"
    elif first["type"] == "missing":
        message = "required field is missing"
    return ConfigError(message, path=str(path), line=_line_of(node, loc), field=field)


def load_model(model: type[Model], path: str | Path, *, data: Any = None,
               node: yaml.Node | None = None) -> Model:
    """Read `path` (or use pre-read data/node) and validate it as `model`."""
    if data is None:
        data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", path=str(path), line=1)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_to_config_error(err, path, node) from None
