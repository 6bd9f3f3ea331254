"""Which artifact a model runs on this device: the fastest of those that passed, and why, in words."""
from __future__ import annotations

from runtimes.backends import why_not_loadable
from runtimes.bundle import Artifact, Bundle

from .record import Measurement


def loadable(bundle: Bundle, role: str) -> tuple[list[Artifact], dict[str, str]]:
    """The model's artifacts this machine can load, in the bundle's order; and why each other one cannot."""
    runs, skipped = [], {}
    for artifact in bundle.manifest.model(role).artifacts:
        why = why_not_loadable(artifact)
        if why is None:
            runs.append(artifact)
        else:
            skipped[artifact.path] = why
    return runs, skipped


def default_artifact(bundle: Bundle, role: str) -> str | None:
    """What runs without a bench record (runtimes.backends.open_artifact): the bundle's selected artifact,
    else the first in the profile's order that loads here."""
    entry = bundle.manifest.model(role)
    chosen = entry.selected_artifact()
    order = [chosen] + [a for a in entry.artifacts if a.path != chosen.path]
    return next((a.path for a in order if why_not_loadable(a) is None), None)


def reference_artifact(bundle: Bundle, role: str) -> Artifact | None:
    """The FP32 artifact the others are judged against: the FP32 ONNX (the converter's own reference), else
    another FP32 artifact that loads here."""
    runs, _ = loadable(bundle, role)
    fp32 = [a for a in runs if a.precision == "fp32"]
    return next((a for a in fp32 if a.format == "onnx"), fp32[0] if fp32 else None)


def _ms(m: Measurement | None) -> str:
    return f"{m.p50_ms:.1f} ms" if m is not None and m.p50_ms is not None else "not measured"


def choose(measurements: list[Measurement], default: str | None) -> tuple[str, str]:
    """(artifact, reason): the lowest p50 latency among the measurements that passed (the reference passes)."""
    passed = [m for m in measurements if m.passed and m.p50_ms is not None]
    if not passed:
        raise ValueError("no measurement passed, not even the reference")
    best = min(passed, key=lambda m: m.p50_ms)
    base = next((m for m in measurements if m.artifact == default), None)
    reason = f"{best.label} is the fastest that passed (p50 {_ms(best)}"
    if base is not None and base is not best and base.p50_ms:
        reason += f"; the bundle's order alone runs {base.artifact}: {_ms(base)}, ratio {best.p50_ms / base.p50_ms:.2f}"
    reason += ")"
    if not best.reference:
        reason += f"; {best.verdict}"
    others = [f"{m.artifact}: {m.error or (m.verdict if not m.passed else _ms(m))}"
              for m in measurements if m is not best]
    return best.artifact, reason + (f". Others: {'; '.join(others)}" if others else "")
