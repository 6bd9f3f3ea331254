"""The bench record: what `edge bench` measured on this device and the artifact it chose per model, kept
in the daemon's state folder as `bench/<pipeline>-<manifest hash>.json`.

The file name carries the hash of the bundle's manifest, so a reconverted or edited bundle never reuses an
old choice: it has no record until it is benched again, and runs in the bundle's order meanwhile.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtimes.bundle import MANIFEST_NAME, Bundle, sha256_of

log = logging.getLogger(__name__)

RECORD_KIND = "edge.bench/1"
RECORD_DIR = "bench"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Measurement(Strict):
    """One artifact of one model, run in the whole pipeline on the bundle's sample pictures."""
    role: str
    artifact: str                              # path in the bundle
    format: str
    precision: str
    reference: bool = False                    # the FP32 artifact the others are compared with
    runs_with: dict[str, str] = Field(default_factory=dict)   # role -> artifact of every model in this run
    error: str | None = None                   # not loadable here, or failed: why (then no numbers)
    p50_ms: float | None = None                # per frame, the pipeline's whole call (pre, models, post)
    p95_ms: float | None = None
    fps: float | None = None                   # frames per second, one frame after the other
    peak_rss_mb: float | None = None           # the bench process running the pipeline + its largest model worker
    load_s: float | None = None
    metric: str | None = None
    value: float | None = None
    budget: float | None = None
    lower_is_better: bool = False
    samples: int = 0
    passed: bool = False
    verdict: str = ""

    @property
    def label(self) -> str:
        return f"{self.artifact} ({self.format} {self.precision})"


class RoleChoice(Strict):
    role: str
    chosen: str                                # artifact path this device runs
    default: str | None = None                 # what the bundle's order alone runs here
    reason: str
    measurements: list[Measurement]

    def measured(self, artifact: str | None) -> Measurement | None:
        return next((m for m in self.measurements if m.artifact == artifact), None)


class CombinedCheck(Strict):
    """Every model on its chosen artifact at once, judged per model against the FP32 reference."""
    runs_with: dict[str, str]
    error: str | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    fps: float | None = None
    peak_rss_mb: float | None = None
    passed: bool = False
    verdict: str = ""


class BenchRecord(Strict):
    kind: str = RECORD_KIND
    created: str
    bundle: str
    pipeline: str
    task: str
    manifest_sha256: str
    host: dict[str, str]
    frames: int
    threads: int                               # intra-op threads the backends were given (0: their default)
    samples: list[str]
    roles: list[RoleChoice]
    combined: CombinedCheck | None = None      # when several models left their reference
    note: str = ""

    def prefer(self) -> dict[str, str]:
        return {choice.role: choice.chosen for choice in self.roles}

    def reason(self) -> str:
        return f"edge bench {self.created}: " + "; ".join(f"{c.role}: {c.reason}" for c in self.roles)


def manifest_digest(bundle: Bundle) -> str:
    return sha256_of(bundle.root / MANIFEST_NAME)


def record_path(bundle: Bundle, state_dir: Path) -> Path:
    return Path(state_dir) / RECORD_DIR / f"{bundle.manifest.pipeline}-{manifest_digest(bundle)[:16]}.json"


def write_record(record: BenchRecord, path: Path) -> Path:
    """Whole or not at all: a daemon starting meanwhile reads the old record or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(record.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def read_record(bundle: Bundle, state_dir: Path | None) -> BenchRecord | None:
    """This bundle's record in `state_dir`, if there is a readable one for exactly this manifest.

    A broken record is logged and ignored, never fatal: the bundle's own order still runs."""
    if state_dir is None:
        return None
    path = record_path(bundle, state_dir)
    if not path.is_file():
        return None
    try:
        record = BenchRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as err:
        log.warning("%s: unreadable bench record, ignored (run `edge bench` again): %s", path,
                    str(err).splitlines()[0])
        return None
    if record.manifest_sha256 != manifest_digest(bundle):
        log.warning("%s: made for another version of this bundle, ignored", path)
        return None
    return record
