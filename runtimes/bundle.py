"""The bundle: a folder with the artifacts a device needs and `manifest.json` describing them.

This module is the single owner of the manifest schema. Converters write it through
`write_bundle_manifest`; devices read it through `Bundle.open`, which verifies every hash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BundleError, one_line

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArtifactCheck(Strict):
    """One way an artifact was proven on the conversion host, and what that host could not execute."""
    executed: str                         # what really ran, and where: "this file in onnxruntime 1.32.0 CPU, x86_64"
    metric: str | None = None             # the family metric against the FP32 reference
    value: float | None = None
    budget: float | None = None
    passed: bool | None = None
    calibration_pictures: list[str] = Field(default_factory=list)
    validation_pictures: list[str] = Field(default_factory=list)
    not_executed: str | None = None       # what was not run here, and why (ARM file, TensorRT, device timing)
    details: dict[str, Any] = Field(default_factory=dict)


BACKEND_OF_FORMAT = {"onnx": "onnxruntime", "paddle_lite": "Paddle Lite", "openvino": "OpenVINO"}
# bf16: OpenVINO IR executed in bfloat16 on CPUs with AVX512-BF16 or AMX (the file keeps f32 weights)
Precision = Literal["fp32", "fp16", "bf16", "int8"]


def execution_precision(precision: str, float_precision: str | None) -> str:
    """What a backend is asked to compute in: the artifact's precision, except an INT8 file whose float
    remainder was judged in bf16, which runs with the bf16 hint (its int8 operators stay int8 whatever the hint)."""
    return "bf16" if precision == "int8" and float_precision == "bf16" else precision


class Artifact(Strict):
    """One runnable file: what it is, what it targets, and what it measured."""
    path: str
    format: Literal["onnx", "paddle_lite", "openvino"]
    precision: Precision
    quantization: str | None = None       # scheme, e.g. "qdq u8 activations, s8 per-channel weights"
    target: str                           # hardware it was built for: x86_64, aarch64, cuda, opencl
    bytes: int
    sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    fp32_nodes: list[str] = Field(default_factory=list)   # nodes kept in float inside an INT8 graph
    # INT8: the precision its float operators run in; "bf16" where the converter judged and timed them in
    # bfloat16 (OpenVINO on CPUs with AVX512-BF16 or AMX); None: float32
    float_precision: Literal["fp32", "bf16"] | None = None
    channel_groups: list[str] = Field(default_factory=list)   # INT8: convs whose channels got split ranges
    checks: list[ArtifactCheck] = Field(default_factory=list)
    companions: list[str] = Field(default_factory=list)   # files it needs beside it (an OpenVINO IR's .bin)

    @property
    def backend(self) -> str:
        """The runtime a device needs to load this file."""
        return BACKEND_OF_FORMAT[self.format]

    @property
    def execution_precision(self) -> str:
        return execution_precision(self.precision, self.float_precision)


class BundleFile(Strict):
    """A non-model file a task needs (character dictionary, label file)."""
    path: str
    bytes: int
    sha256: str


class TensorSpec(Strict):
    name: str
    shape: list[int | None]
    dtype: str = "float32"


class SourceFile(Strict):
    path: str
    sha256: str


class ModelEntry(Strict):
    role: str                              # det / cls / rec / detector / pose / classifier / segmenter
    name: str
    input: TensorSpec
    outputs: list[str]
    preprocess: list[dict[str, Any]]       # ordered ops: {"op": name, ...params}
    postprocess: dict[str, Any]            # {"kind": name, ...params}
    labels: list[str] | None = None
    artifacts: list[Artifact]
    selected: str                          # path of the artifact a device runs
    decision: str                          # why that one (measured numbers)
    source_format: Literal["paddle-legacy", "paddle-pir", "onnx"]
    source_files: list[SourceFile]

    def selected_artifact(self) -> Artifact:
        for art in self.artifacts:
            if art.path == self.selected:
                return art
        raise BundleError(f"model '{self.role}': selected artifact {self.selected} is not listed")


class RuntimeOptions(Strict):
    """How a device should run the artifacts (copied from the profile at conversion time)."""
    threads: int = 0                       # 0: let the backend decide
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    provider_options: list[dict[str, Any]] = Field(default_factory=list)
    openvino: dict[str, Any] = Field(default_factory=dict)   # OpenVINO properties (hints, streams) from the profile


class Provenance(Strict):
    created: str
    profile: str
    tools: dict[str, str]
    host: dict[str, str] = Field(default_factory=dict)


class Manifest(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    pipeline: str
    task: str
    runtime: RuntimeOptions
    models: list[ModelEntry]
    files: list[BundleFile] = Field(default_factory=list)
    # A few of the pictures the converter judged the artifacts on, so a device can measure and compare
    # them itself (`edge bench`); bundles made before this field carry none.
    samples: list[BundleFile] = Field(default_factory=list)
    provenance: Provenance
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _companions_are_hashed(self) -> "Manifest":
        """An artifact's companion (an IR's .bin) is loaded as much as the artifact, so it must be in `files`,
        whose sizes and sha256 `verify()` checks."""
        listed = {f.path for f in self.files}
        loose = [c for m in self.models for a in m.artifacts for c in a.companions if c not in listed]
        if loose:
            raise ValueError(f"companion file(s) {', '.join(loose)} not listed in 'files' (so never verified)")
        return self

    def model(self, role: str) -> ModelEntry:
        for entry in self.models:
            if entry.role == role:
                return entry
        roles = ", ".join(m.role for m in self.models)
        raise BundleError(f"bundle '{self.pipeline}' has no '{role}' model (it has: {roles})")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    """A bundle folder opened for use on a device."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root, self.manifest = root, manifest

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "Bundle":
        root = Path(path)
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleError(f"{root}: not a bundle (no {MANIFEST_NAME}); make one with 'edge convert'")
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{manifest_path}: unreadable manifest ({err})") from None
        if isinstance(raw, dict) and raw.get("schema_version") not in (None, SCHEMA_VERSION):
            raise BundleError(f"{manifest_path}: schema_version {one_line(repr(raw.get('schema_version')), 80)} is not "
                              f"supported by this edge (it reads {SCHEMA_VERSION}); reconvert the bundle")
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            # a key or a message may quote the manifest's own text, line breaks and all: keep the error one line
            raise BundleError(one_line(f"{manifest_path}: {field}: {first['msg']}")) from None
        bundle = cls(root, manifest)
        if verify:
            problems = bundle.verify()
            if problems:
                raise BundleError(f"{root}: bundle failed verification: {problems[0]}"
                                  + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
        return bundle

    def path_of(self, relative: str) -> Path:
        """Resolve a manifest path, refusing anything that escapes the bundle folder."""
        full = (self.root / relative).resolve()
        if self.root.resolve() not in full.parents:
            raise BundleError(f"{self.root}: manifest path '{relative}' points outside the bundle")
        return full

    def entries(self) -> list[tuple[str, int, str]]:
        """(path, bytes, sha256) of every file the manifest lists."""
        listed = [(a.path, a.bytes, a.sha256) for m in self.manifest.models for a in m.artifacts]
        listed += [(f.path, f.bytes, f.sha256) for f in self.manifest.files + self.manifest.samples]
        return listed

    def verify(self) -> list[str]:
        """Every listed file exists with the recorded size and sha256; returns the problems found."""
        problems = []
        for rel, size, digest in self.entries():
            try:
                full = self.path_of(rel)
            except BundleError as err:
                problems.append(str(err))
                continue
            if not full.is_file():
                problems.append(f"{rel} is missing")
            elif full.stat().st_size != size:
                problems.append(f"{rel} has {full.stat().st_size} bytes, manifest says {size}")
            elif sha256_of(full) != digest:
                problems.append(f"{rel} does not match its sha256 (modified or corrupt)")
        return problems

    def with_precision(self, precision: str) -> "Bundle":
        """The same bundle running its `precision` artifacts (e.g. the FP32 twins, to compare or debug)."""
        manifest = self.manifest.model_copy(deep=True)
        for entry in manifest.models:
            match = next((a for a in entry.artifacts if a.precision == precision), None)
            if match is None:
                have = ", ".join(a.precision for a in entry.artifacts)
                raise BundleError(f"{self.root}: model '{entry.role}' has no {precision} artifact (it has: {have})")
            entry.selected = match.path
        return Bundle(self.root, manifest)

    def with_preprocess(self, overrides: dict[str, dict[str, dict[str, Any]]]) -> "Bundle":
        """The same bundle with pre-processing parameters replaced, {role: {op: {param: value}}} (a device's
        own setting, e.g. the daemon config's `preprocess`); a role or op the bundle lacks is a BundleError.
        Parameter names and values are checked when the task builds its pre-processing."""
        manifest = self.manifest.model_copy(deep=True)
        for role, ops in overrides.items():
            entry = manifest.model(role)
            for name, params in ops.items():
                found = [op for op in entry.preprocess if op.get("op") == name]
                if not found:
                    have = ", ".join(str(op.get("op")) for op in entry.preprocess)
                    raise BundleError(f"model '{role}' has no pre-processing op '{name}' to override (it has: {have})")
                for op in found:
                    op.update(params)
        return Bundle(self.root, manifest)

    def artifact_path(self, role: str) -> tuple[Artifact, Path]:
        entry = self.manifest.model(role)
        art = entry.selected_artifact()
        return art, self.path_of(art.path)


def describe_file(root: Path, relative: str) -> dict[str, Any]:
    full = root / relative
    return {"path": relative, "bytes": full.stat().st_size, "sha256": sha256_of(full)}


def write_manifest(root: Path, manifest: Manifest) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    target = root / MANIFEST_NAME
    tmp = target.with_suffix(".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(target)
    return target
