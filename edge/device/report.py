"""What `edge bench` shows: the table (printed and in bench.md) and a chart of latency per artifact.

matplotlib is optional on a device: without it the chart is skipped with one line, the rest is written.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .record import BenchRecord, Measurement

PRECISION_COLOURS = {"fp32": "#4c72b0", "fp16": "#dd8452", "int8": "#55a868"}
HEADER = ("model", "artifact", "format", "precision", "p50 ms", "p95 ms", "frames/s", "peak RSS MB", "vs FP32",
          "passed", "chosen")


def _num(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(m: Measurement, chosen: str) -> tuple[str, ...]:
    if m.error:
        agreement, passed = m.error, "no"
    elif m.reference:
        agreement, passed = "reference", "yes"
    else:
        agreement, passed = m.verdict, "yes" if m.passed else "no"
    return (m.role, m.artifact, m.format, m.precision, _num(m.p50_ms), _num(m.p95_ms), _num(m.fps, 2),
            _num(m.peak_rss_mb), agreement.replace("|", "/"), passed, "**yes**" if m.artifact == chosen else "")


def table(record: BenchRecord) -> str:
    rows = [HEADER, tuple("---" for _ in HEADER)]
    rows += [_row(m, c.chosen) for c in record.roles for m in c.measurements]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def markdown(record: BenchRecord, chart: str | None) -> str:
    lines = [f"# edge bench: {record.pipeline} ({record.task})", "",
             f"Bundle `{record.bundle}` (manifest sha256 {record.manifest_sha256[:16]}), measured {record.created} on "
             f"{record.host.get('machine')} ({record.host.get('processor')}), onnxruntime "
             f"{record.host.get('onnxruntime', 'absent')}; {record.frames} timed frames per run after one warm-up call "
             f"per picture, threads {record.threads or 'backend default'}; pictures: {', '.join(record.samples)}.", "",
             "Latency is the pipeline's whole call per frame (pre-processing, every model, post-processing; picture "
             "decoding excluded). Each model's artifacts run in the whole pipeline with the other models on their "
             "FP32 reference, each run in a fresh process; peak RSS is that process's (Python, libraries and every "
             "model of the pipeline) plus its largest model worker process (Paddle Lite runs in one). The runs are made "
             "in two rounds, the order reversed in the second, half the frames each; on a busy machine compare "
             "ratios within one bench rather than milliseconds across benches.", "",
             table(record), ""]
    for choice in record.roles:
        lines.append(f"- **{choice.role}**: runs `{choice.chosen}`. {choice.reason}")
    if record.combined is not None:
        c = record.combined
        lines.append(f"- **together** ({', '.join(c.runs_with.values())}): "
                     f"{'' if c.p50_ms is None else f'p50 {c.p50_ms:.1f} ms; '}{c.verdict}")
    if record.note:
        lines.append(f"- {record.note}")
    if chart:
        lines += ["", f"![latency per artifact]({chart})"]
    return "\n".join(lines) + "\n"


def chart(record: BenchRecord, path: Path) -> str | None:
    """A horizontal bar per measured artifact: p50 latency, whisker to p95, colour by precision, hatched when it
    missed its budget. None (and nothing written) without matplotlib."""
    try:
        import matplotlib
        logging.getLogger("matplotlib").setLevel(logging.WARNING)     # its font cache notes are not ours
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return None
    rows = [(c, m) for c in record.roles for m in c.measurements if m.p50_ms is not None]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * max(len(rows), 1)))
    for y, (choice, m) in enumerate(rows):
        ax.barh(y, m.p50_ms, xerr=[[0], [max((m.p95_ms or m.p50_ms) - m.p50_ms, 0)]], capsize=3,
                color=PRECISION_COLOURS.get(m.precision, "#8c8c8c"), hatch=None if m.passed else "//",
                edgecolor="black" if m.artifact == choice.chosen else "none", linewidth=2)
        note = "chosen" if m.artifact == choice.chosen else ("" if m.passed else "missed budget")
        ax.text(max(m.p95_ms or 0.0, m.p50_ms), y, f"  {m.p50_ms:.1f} ms {note}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{c.role}: {m.label}" for c, m in rows], fontsize=8)
    ax.set_xlim(0, 1.3 * max((max(m.p95_ms or 0.0, m.p50_ms) for _, m in rows), default=1.0))
    ax.invert_yaxis()
    ax.set_xlabel("latency per frame, ms (bar p50, whisker p95)")
    ax.set_title(f"edge bench {record.pipeline} on {record.host.get('machine')}, {record.frames} frames", fontsize=10)
    ax.legend(handles=[Patch(color=c, label=p) for p, c in PRECISION_COLOURS.items()], fontsize=8, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def write_reports(record: BenchRecord, out: Path) -> tuple[Path, Path | None]:
    """bench.md and bench.png in `out`; the PNG is None without matplotlib."""
    out.mkdir(parents=True, exist_ok=True)
    png = out / "bench.png"
    drawn = chart(record, png)
    md = out / "bench.md"
    md.write_text(markdown(record, drawn), encoding="utf-8")
    return md, png if drawn else None
