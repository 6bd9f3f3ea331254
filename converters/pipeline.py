"""`edge convert`: order the passes the profile asks for, build, judge, choose and package.

For every SRC: Paddle -> ONNX, repair, parity with Paddle Inference, graph optimisation (the FP32
reference). Then, per artifact the profile lists, build it and let it prove itself against the
FP32 reference with the family's metric; converters/selection.py decides what ships (on a host that can
time the target: the fastest that passed, plus the profile's fallbacks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import device_profiles
from device_profiles import ArtifactChoice, Profile
from runtimes.bundle import RuntimeOptions
from runtimes.errors import ConversionError

from . import builders
from .builders.base import BuildResult
from .check_pool import CheckPool
from .families import family_for
from .package import BuiltModel, write_bundle
from .pictures import choose_pictures
from .selection import choose_by_speed, ship_in_order
from .passes.base import ModelFile, PassContext, Target
from .passes.optimize import OptimizePass
from .passes.paddle_parity import PaddleParityPass
from .passes.paddle_to_onnx import PaddleToOnnxPass
from .passes.repair import RepairPass
from .sources import load_source
from .toolchains import needed_by, toolchain
from .spec import ExportSource


@dataclass(frozen=True)
class PipelineShape:
    name: str                       # default pipeline name in topics and manifests
    order: tuple[str, ...]          # build order (later roles may calibrate on earlier ones' output)
    required: frozenset[str]


SHAPES = {
    "ocr": PipelineShape("ppocr", ("det", "cls", "rec"), frozenset({"det", "rec"})),
    "detection": PipelineShape("ppdet", ("detector",), frozenset({"detector"})),
    "classification": PipelineShape("ppcls", ("classifier",), frozenset({"classifier"})),
    "keypoints": PipelineShape("pptinypose", ("detector", "pose"), frozenset({"detector", "pose"})),
    "segmentation": PipelineShape("ppseg", ("segmenter",), frozenset({"segmenter"})),
}
# A detector can be the first stage of another task's pipeline (persons for a pose model):
# given together with that task's models, the other task names the pipeline.
FEEDER_TASKS = frozenset({"detection"})
FP32_PASSES = (PaddleToOnnxPass(), RepairPass(), PaddleParityPass(), OptimizePass())


@dataclass
class ConvertRequest:
    sources: list[Path]
    profile: str | Path
    out: Path
    calib: Path | None = None
    val: Path | None = None
    workdir: Path | None = None
    name: str | None = None
    progress: Callable[[str], None] = lambda message: None
    options: dict[str, Any] = field(default_factory=dict)


def _group(sources: list[ExportSource]) -> tuple[str, PipelineShape, dict[str, ExportSource]]:
    tasks = {s.spec.task for s in sources}
    if len(tasks) > 1:
        tasks -= FEEDER_TASKS
    if len(tasks) != 1:
        raise ConversionError(f"these sources belong to different pipelines ({', '.join(sorted(tasks))}); "
                              "convert them separately")
    task = tasks.pop()
    shape = SHAPES.get(task)
    if shape is None:
        raise ConversionError(f"no pipeline for '{task}' models yet")
    by_role: dict[str, ExportSource] = {}
    for source in sources:
        if source.spec.role in by_role:
            raise ConversionError(f"two sources are '{source.spec.role}' models: {by_role[source.spec.role].path} "
                                  f"and {source.path}")
        by_role[source.spec.role] = source
    extra = set(by_role) - set(shape.order)
    if extra:
        raise ConversionError(f"a {task} bundle has no place for a {', '.join(sorted(extra))} model "
                              f"(it takes: {', '.join(shape.order)})")
    missing = shape.required - set(by_role)
    if missing:
        raise ConversionError(f"a {task} bundle needs {', '.join(sorted(missing))} model(s) too "
                              f"(given: {', '.join(sorted(by_role))})")
    return task, shape, {role: by_role[role] for role in shape.order if role in by_role}


def _target(profile: Profile, choice: ArtifactChoice) -> Target:
    runtime = RuntimeOptions(threads=profile.threads, providers=profile.runtime.providers,
                             provider_options=profile.runtime.provider_options, openvino=profile.runtime.openvino)
    lite = tuple(profile.paddle_lite.valid_targets) if profile.paddle_lite else ()
    return Target(profile=profile.name, arch=profile.arch, accelerator=profile.accelerator, format=choice.format,
                  precision=choice.precision, quantization=choice.quantization, opset=profile.onnx.opset,
                  runtime=runtime, cpu=profile.cpu, cpu_features=tuple(profile.cpu_features),
                  paddle_lite_targets=lite)


def fp32_reference(source: ExportSource, target: Target, workdir: Path, images: list[Path],
                   progress: Callable[[str], None] = lambda _: None) -> ModelFile:
    """The FP32 ONNX every artifact of `source` is built from and judged against (FP32_PASSES; the parity
    check runs on `images`). Also what benches and tests build their references with."""
    role = source.spec.role
    ctx = PassContext(workdir, target, role, progress,
                      {"source": source, "params_file": source.params_file, "val_images": images})
    model = ModelFile(source.model_file, source.format)
    for step in FP32_PASSES:
        progress(f"{role}: {step.name}")
        model = step.run(model, ctx)
    return model


def _fp32_reference(source: ExportSource, profile: Profile, workdir: Path, images: list[Path],
                    progress: Callable[[str], None]) -> ModelFile:
    return fp32_reference(source, _target(profile, ArtifactChoice(format="onnx", precision="fp32")), workdir,
                          images, progress)


def _build_role(profile: Profile, role: str, source: ExportSource, fp32: ModelFile, workdir: Path,
                progress: Callable[[str], None], options: dict[str, Any]) -> list[tuple[ArtifactChoice, BuildResult]]:
    """Every artifact the profile asks for, for one model; checks may still be running (BuildResult.pending)."""
    return [(choice, builders.build(choice, fp32, PassContext(workdir, _target(profile, choice), role, progress,
                                                              dict(options))))
            for choice in profile.artifacts]


def _decide(profile: Profile, role: str, source: ExportSource, results: list[tuple[ArtifactChoice, BuildResult]],
            fp32: Path, options: dict[str, Any], progress: Callable[[str], None]) -> tuple[BuiltModel, list]:
    """What ships for one model and the candidate table (converters/selection.py): where this host can time
    the target, the fastest candidate that passed plus the profile's fallbacks; elsewhere all that passed."""
    if _target(profile, profile.artifacts[0]).runs_on_host():
        return choose_by_speed(profile, role, source, results, fp32, options, progress)
    return ship_in_order(role, source, results, progress)


def convert(req: ConvertRequest) -> dict[str, Any]:
    profile = device_profiles.load(req.profile)
    builders.check_buildable(profile)
    for name in needed_by(profile):      # installed by the convert command or `edge toolchain install`, not here
        toolchain(name, req.progress).ensure(allow_install=False)
    req.progress(f"profile {profile.name}: {', '.join(a.label() for a in profile.artifacts)}")
    sources = [load_source(p) for p in req.sources]
    task, shape, by_role = _group(sources)
    pictures = choose_pictures(req.calib, req.val, any(a.precision == "int8" for a in profile.artifacts))
    calib, val = pictures.calib, pictures.val
    req.progress(f"pictures: {pictures.how}")
    workdir = req.workdir or req.out.parent / f".{req.out.name}.work"
    workdir.mkdir(parents=True, exist_ok=True)

    fp32 = {role: _fp32_reference(src, profile, workdir, val, req.progress) for role, src in by_role.items()}
    family = family_for(task, {role: src.spec for role, src in by_role.items()})
    fp32_paths = {role: model.path for role, model in fp32.items()}
    options = {"family": family, "fp32_models": fp32_paths, "calib_images": calib, "val_images": val,
               "threads": profile.threads, **req.options}
    # Emulated checks beside the builds (converters/check_pool.py): one at a time while building, then two.
    with CheckPool() as pool:
        try:
            results = {role: _build_role(profile, role, source, fp32[role], workdir, req.progress,
                                         {**options, "source": source, "check_pool": pool})
                       for role, source in by_role.items()}
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.builds_done()
        decided = {role: _decide(profile, role, by_role[role], [(c, r.settle()) for c, r in results[role]],
                                 fp32_paths[role], {**options, "source": by_role[role]}, req.progress)
                   for role in by_role}
    built = [model for model, _ in decided.values()]
    outputs = {role: builders.output_names(fp32[role].path) for role in by_role}
    manifest = write_bundle(req.out, pipeline=req.name or shape.name, task=task, profile=profile.name,
                            runtime=_target(profile, profile.artifacts[0]).runtime, models=built, samples=val,
                            outputs=outputs, metrics={"pictures": {"how": pictures.how,
                                                                   "calibration": [p.name for p in calib],
                                                                   "validation": [p.name for p in val]},
                                                      "candidates": {role: table for role, (_, table) in
                                                                     decided.items()}})
    return {"bundle": str(req.out), "manifest": manifest}
