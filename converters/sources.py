"""Finding the program, weights and metadata of each SRC given to `edge convert`."""
from __future__ import annotations

from pathlib import Path

from runtimes.errors import ConversionError

from .metadata import find_metadata, read_spec
from .spec import ExportSource

PROGRAM_KINDS = ((".pdmodel", "paddle-legacy"), (".json", "paddle-pir"))


def _paddle_program(folder: Path) -> tuple[Path, Path, str] | None:
    for suffix, fmt in PROGRAM_KINDS:
        for program in sorted(folder.glob(f"*{suffix}")):
            params = program.with_suffix(".pdiparams")
            if params.is_file():
                return program, params, fmt
    return None


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ConversionError(f"{path}: {what} is missing")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path}: {what} is empty")


def load_source(path: str | Path) -> ExportSource:
    """SRC is an export folder (Paddle legacy/PIR, or ONNX with metadata) or a file inside one."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or folder")
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.suffix == ".onnx":
        model, params, fmt = path, None, "onnx"
    elif path.is_file() and path.suffix in (".pdmodel", ".json"):
        model, params = path, path.with_suffix(".pdiparams")
        fmt = dict(PROGRAM_KINDS)[path.suffix]
        _check_file(params, "the weights file (.pdiparams)")
    else:
        found = _paddle_program(folder)
        if found:
            model, params, fmt = found
        else:
            onnx_files = sorted(folder.glob("*.onnx"))
            if not onnx_files:
                raise ConversionError(f"{folder}: no model here (expected *.pdmodel or *.json with *.pdiparams, "
                                      "or an .onnx file)")
            model, params, fmt = onnx_files[0], None, "onnx"
    _check_file(model, "the model program")
    spec = read_spec(find_metadata(folder))
    return ExportSource(path=folder, format=fmt, model_file=model, params_file=params, spec=spec)
