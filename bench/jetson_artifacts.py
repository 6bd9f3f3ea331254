"""Jetson FP16 and TensorRT-form INT8 ONNX for every model of the five families: the family metric against
FP32 on held-out pictures, what was kept in float, and the structural check.

Per family, the FP32 references are made from the shared exports by the converter's own FP32 passes, then
the real builders for the profile (jetson-orin by default) run, calibrated on in-domain pictures and judged
on others (the picture sets of bench/arm_artifacts.py).
  FP16 table: both checks of converters/builders/onnx_fp16.py, the FP16 storage twin (every tensor between
    FP16 operators stored in float16) and the file itself in onnxruntime's CPU provider (float32
    arithmetic); how far each one's outputs are from FP32 on one judging input (relative RMS); the nodes
    kept in FP32 by cause; the largest activation measured on the calibration pictures.
  INT8 table: the QDQ file executed as written by onnxruntime's CPU provider, the range method and float
    fallback it needed, and the structural check of TensorRT's explicit-quantization form.
Nothing here runs TensorRT or CUDA, so no latency is printed: the device measures it (`edge bench`).
Usage: python bench/jetson_artifacts.py [--families detection,...] [--profile jetson-orin] [--only fp16|int8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import device_profiles  # noqa: E402
from bench.arm_artifacts import FAMILIES, SHARED  # noqa: E402
from converters.builders.onnx_fp16 import build_onnx_fp16  # noqa: E402
from converters.builders.onnx_int8 import build_onnx_int8  # noqa: E402
from converters.families import family_for  # noqa: E402
from converters.passes.base import PassContext, Target  # noqa: E402
from converters.pipeline import SHAPES, fp32_reference  # noqa: E402
from converters.sources import load_source  # noqa: E402

FP16_HEADER = ("| family | model | metric | FP16 storage twin | this file, onnxruntime CPU | output rel. RMS vs FP32 "
               "(twin / file) | nodes in FP32 | largest activation (calibration) | build | nodes kept in FP32 (cause) |")
INT8_HEADER = ("| family | model | INT8 | metric vs FP32 (held-out pictures) | ranges | fallback | structural check | "
               "build |")


class FamilyRun:
    """One family's FP32 references and the contexts its Jetson builders run in."""

    def __init__(self, task: str, profile, work: Path):
        exports, calib_names, val_names = FAMILIES[task]
        self.task, self.profile, self.work = task, profile, work
        self.calib = [SHARED / "images" / n for n in calib_names]
        self.val = [SHARED / "images" / n for n in val_names]
        sources = {s.spec.role: s for s in (load_source(SHARED / "models" / e) for e in exports)}
        self.order = [role for role in SHAPES[task].order if role in sources]
        self.sources, self.fp32 = sources, {}
        for role in self.order:
            self.fp32[role] = fp32_reference(sources[role], self.target("fp32"), work, self.val)
        self.family = family_for(task, {role: s.spec for role, s in sources.items()})

    def target(self, precision: str, quantization: str | None = None) -> Target:
        p = self.profile
        return Target(profile=p.name, arch=p.arch, accelerator=p.accelerator, format="onnx",
                      precision=precision, quantization=quantization, opset=p.onnx.opset)

    def context(self, role: str, precision: str, quantization: str | None = None) -> PassContext:
        return PassContext(self.work, self.target(precision, quantization), role, options={
            "source": self.sources[role], "val_images": self.val, "family": self.family,
            "fp32_models": {r: m.path for r, m in self.fp32.items()}, "calib_images": self.calib,
            "threads": self.profile.threads})

    def name(self, role: str) -> str:
        return f"{role} ({self.sources[role].spec.name or self.sources[role].path.name})"


def fp16_rows(run: FamilyRun) -> list[str]:
    out = []
    for role in run.order:
        started = time.monotonic()
        result = build_onnx_fp16(run.fp32[role], run.context(role, "fp16"))
        seconds = time.monotonic() - started
        if result.artifact is None:
            out.append(f"| {run.task} | {run.name(role)} | refused | {'- | ' * 5}{seconds:.0f} s | {result.reason} |")
            continue
        twin, own = result.artifact.checks
        kept = twin["details"]["kept_by"]
        causes = ", ".join(f"{cause} {n}" for cause, n in kept.items()) or "none"
        names = ", ".join(f"{n} ({why.split(':')[0]})" for n, why in twin["details"]["fp32_nodes"].items()) or "-"
        largest = twin["details"]["largest_activation"]
        drift = " / ".join(f"{c['details']['outputs_vs_fp32']['rel_rms']:.1e}" for c in (twin, own))
        out.append(f"| {run.task} | {run.name(role)} | {twin['metric']} (budget {twin['budget']:g}) | "
                   f"{twin['value']:.4f} | {own['value']:.4f} | {drift} | {len(result.artifact.fp32_nodes)}: {causes} | "
                   f"{largest['abs_max']:.4g} | {seconds:.0f} s | {names} |")
    return out


def int8_rows(run: FamilyRun) -> list[str]:
    choice = next(a for a in run.profile.artifacts if a.precision == "int8")
    out = []
    for role in run.order:
        started = time.monotonic()
        result = build_onnx_int8(run.fp32[role], run.context(role, "int8", choice.quantization))
        seconds = time.monotonic() - started
        art = result.artifact
        if art is None:
            out.append(f"| {run.task} | {run.name(role)} | refused | {result.reason[:200]} | - | - | - | {seconds:.0f} s |")
            continue
        judged, form = art.checks[0], art.checks[1]
        fallback = (f"{len(art.channel_groups)} convs in channel groups, {len(art.fp32_nodes)} nodes in float"
                    if art.channel_groups or art.fp32_nodes else "none")
        extras = "".join(f", {k} {v:.4f}" for k, v in judged["details"].items()
                         if k not in ("calibration_method", "samples") and isinstance(v, float))
        out.append(f"| {run.task} | {run.name(role)} | shipped | {judged['metric']} {judged['value']:.4f}{extras} "
                   f"(budget {judged['budget']:g}, {judged['details']['samples']} samples) | "
                   f"{judged['details']['calibration_method']} | {fallback} | "
                   f"{'passed' if form['passed'] else 'FAILED'}: {form['details']['qdq_pairs']} Q/DQ pairs, "
                   f"{form['details']['weights_per_channel']}/{form['details']['weights']} weights per channel | "
                   f"{seconds:.0f} s |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--profile", default="jetson-orin")
    parser.add_argument("--only", choices=("fp16", "int8"), default=None)
    args = parser.parse_args()
    profile = device_profiles.load(args.profile)
    tables = {"fp16": (FP16_HEADER, fp16_rows, []), "int8": (INT8_HEADER, int8_rows, [])}
    tables = {k: v for k, v in tables.items() if args.only in (None, k)}
    for task in args.families.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            run = FamilyRun(task, profile, Path(tmp))
            for kind, (_, rows, lines) in tables.items():
                lines += rows(run)
                print(f"{task} {kind}: done", file=sys.stderr, flush=True)
    print(f"profile {profile.name}; metrics from onnxruntime CPU on this host (TensorRT and CUDA: not executed here)")
    for kind, (header, _, lines) in tables.items():
        print(f"\n{kind.upper()}\n\n{header}\n" + "|---" * header.count(" | ") + "|---|")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
