"""Write the bundle: copy the artifacts, write task files and the manifest, swap it into place whole.

The bundle is assembled in a sibling temporary folder and renamed over the target at the end, so
an interrupted conversion never leaves a half-written bundle where a good one was.
"""
from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtimes import __version__
from runtimes.bundle import (MANIFEST_NAME, Artifact, BundleFile, Manifest, ModelEntry, Provenance, RuntimeOptions,
                             SourceFile, describe_file, execution_precision, sha256_of, write_manifest)
from runtimes.errors import ConversionError
from runtimes.image import read_image
from runtimes.toolpaths import READY_FILE, toolchain_dir

from .spec import ExportSource

SAMPLES = 4                  # validation pictures shipped in the bundle for `edge bench` on the device
SAMPLE_SIDE = 1600           # longer pictures are shipped downscaled to this side (JPEG), to keep the bundle small
SAMPLES_DIR = "samples"
ARTIFACT_SUFFIX = {"onnx": ".onnx", "paddle_lite": ".nb", "openvino": ".xml"}
TOOLS = ("paddlepaddle", "paddle2onnx", "onnx", "onnxruntime", "openvino", "nncf", "numpy",
         "opencv-python-headless")


@dataclass
class BuiltArtifact:
    path: Path                       # file in the work folder
    format: str
    precision: str
    quantization: str | None
    target: str
    metrics: dict[str, float] = field(default_factory=dict)
    fp32_nodes: list[str] = field(default_factory=list)
    channel_groups: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)   # runtimes.bundle.ArtifactCheck fields
    companions: list[Path] = field(default_factory=list)   # files the artifact needs beside it (an IR's .bin)
    float_precision: str | None = None      # INT8: its float operators' precision (runtimes.bundle.Artifact)

    @property
    def execution_precision(self) -> str:
        return execution_precision(self.precision, self.float_precision)


@dataclass
class BuiltModel:
    source: ExportSource
    artifacts: list[BuiltArtifact]
    selected: int                    # index into artifacts
    decision: str


def tool_versions(paddle_lite: bool = False) -> dict[str, str]:
    versions = {"edge": __version__, "python": platform.python_version()}
    if paddle_lite:    # .nb files are tied to the Paddle Lite version of the opt that wrote them
        try:
            ready = json.loads((toolchain_dir("paddle-lite") / READY_FILE).read_text(encoding="utf-8"))
            versions["paddlelite (opt)"] = ready["paddlelite"]
        except (OSError, ValueError, KeyError):
            versions["paddlelite (opt)"] = "unknown"
    for name in TOOLS:
        try:
            versions[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            continue
    return versions


def _source_files(source: ExportSource) -> list[SourceFile]:
    files = [source.model_file] + ([source.params_file] if source.params_file else [])
    if source.spec.metadata_path:
        files.append(source.spec.metadata_path)
    return [SourceFile(path=str(f), sha256=sha256_of(f)) for f in files]


def _copy_companions(root: Path, art: BuiltArtifact, name: str) -> list[str]:
    """Each companion beside the artifact under the artifact's stem and its own suffix (an IR's `.bin` must
    share the `.xml`'s stem: OpenVINO finds it by that name)."""
    names = []
    for companion in art.companions:
        names.append(str(Path(name).with_suffix(companion.suffix)))
        if names[-1] == name or names[-1] in names[:-1]:
            raise ConversionError(f"{art.path.name}: companion {companion.name} would overwrite another file")
        shutil.copyfile(companion, root / names[-1])
    return names


def _entry(root: Path, model: BuiltModel) -> tuple[ModelEntry, list[BundleFile]]:
    """The model's manifest entry, and its artifacts' companion files (listed in the manifest's `files`,
    so every byte a device loads is hashed and verified)."""
    spec, artifacts, companions = model.source.spec, [], []
    for art in model.artifacts:
        name = f"{spec.role}.{art.precision}{ARTIFACT_SUFFIX[art.format]}"
        shutil.copyfile(art.path, root / name)
        beside = _copy_companions(root, art, name)
        companions += [BundleFile(**describe_file(root, c)) for c in beside]
        artifacts.append(Artifact(format=art.format, precision=art.precision, quantization=art.quantization,
                                  target=art.target, metrics=art.metrics, fp32_nodes=art.fp32_nodes,
                                  channel_groups=art.channel_groups, checks=art.checks, companions=beside,
                                  float_precision=art.float_precision,
                                  **describe_file(root, name)))
    return ModelEntry(role=spec.role, name=spec.name, input=spec.input, outputs=[], preprocess=spec.preprocess,
                      postprocess=spec.postprocess, labels=spec.labels, artifacts=artifacts,
                      selected=artifacts[model.selected].path, decision=model.decision,
                      source_format=model.source.format, source_files=_source_files(model.source)), companions


def _copy_samples(root: Path, pictures: list[Path]) -> list[BundleFile]:
    """Up to SAMPLES of the judging pictures, spread over the list, into `samples/`: as they are, or
    downscaled (longer side SAMPLE_SIDE, JPEG) when larger."""
    if not pictures:
        return []
    picks = sorted({int(i) for i in np.linspace(0, len(pictures) - 1, min(SAMPLES, len(pictures))).round()})
    (root / SAMPLES_DIR).mkdir()
    listed = []
    for picture in (pictures[i] for i in picks):
        image = read_image(picture)
        scale = SAMPLE_SIDE / max(image.shape[:2])
        if scale >= 1.0:
            name = f"{SAMPLES_DIR}/{picture.name}"
            shutil.copyfile(picture, root / name)
        else:
            name = f"{SAMPLES_DIR}/{picture.stem}.jpg"
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if not cv2.imwrite(str(root / name), small, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                raise ConversionError(f"could not write the sample picture {name}")
        listed.append(BundleFile(**describe_file(root, name)))
    return listed


def _swap_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        if not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
            raise ConversionError(f"{out}: exists and is not a bundle; refusing to overwrite it")
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def write_bundle(out: Path, *, pipeline: str, task: str, profile: str, runtime: RuntimeOptions,
                 models: list[BuiltModel], outputs: dict[str, list[str]], metrics: dict[str, Any],
                 samples: list[Path] | None = None) -> Manifest:
    """`samples`: pictures the artifacts were judged on; a few ship in the bundle (see _copy_samples)."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries, files = [], []
        for model in models:
            entry, companions = _entry(staging, model)
            entry.outputs = outputs.get(entry.role, [])
            entries.append(entry)
            files += companions
            for name, text in model.source.spec.files.items():
                (staging / name).write_text(text, encoding="utf-8")
                files.append(BundleFile(**describe_file(staging, name)))
        manifest = Manifest(pipeline=pipeline, task=task, runtime=runtime, models=entries, files=files,
                            samples=_copy_samples(staging, list(samples or [])),
                            provenance=Provenance(created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                                  profile=profile, tools=tool_versions(
                                                  any(a.format == "paddle_lite" for m in models for a in m.artifacts)),
                                                  host={"machine": platform.machine(), "system": platform.system(),
                                                        "processor": platform.processor() or "unknown"}),
                            metrics=metrics)
        write_manifest(staging, manifest)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
