"""`edge inspect BUNDLE`: print the manifest's essentials and verify every hash."""
from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

from runtimes.backends import why_not_loadable
from runtimes.bundle import Bundle
from runtimes.errors import BundleError, one_line

from ..daemon.config import default_state_dir
from ..device.record import BenchRecord, read_record, record_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("inspect", help="show a bundle and verify its files")
    parser.add_argument("bundle")
    parser.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    parser.add_argument("--state-dir", type=Path, help="the daemon's state folder, to show what `edge bench` chose "
                        "there (default ~/.local/state/edge/<this host's name>)")
    parser.set_defaults(handler=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle, verify=False)
    manifest = bundle.manifest
    problems = bundle.verify()
    state_dir = args.state_dir or default_state_dir(socket.gethostname().split(".")[0] or "local")
    record = read_record(bundle, state_dir) if not problems else None
    if args.json:
        print(json.dumps({"manifest": manifest.model_dump(mode="json"), "problems": problems,
                          "device_choice": record.model_dump(mode="json") if record else None}, ensure_ascii=False))
    else:
        prov = manifest.provenance
        print(f"bundle {args.bundle}: pipeline '{manifest.pipeline}' (task {manifest.task}), profile {prov.profile}, "
              f"made {prov.created}")
        for entry in manifest.models:
            print(f"  {entry.role}: {entry.name} from {entry.source_format}")
            for art in entry.artifacts:
                chosen = "->" if art.path == entry.selected else "  "
                metrics = ", ".join(f"{k}={v:.4g}" for k, v in art.metrics.items())
                floats = f" (float ops in {art.float_precision})" if art.float_precision else ""
                print(f"    {chosen} {art.path} {art.format} {art.precision}{floats} ({art.target}) {art.bytes} B "
                      f"sha256 {art.sha256[:12]}{'  ' + metrics if metrics else ''}")
                why = why_not_loadable(art)
                print(f"         needs {art.backend} on the device; loads here: {'yes' if why is None else 'no, ' + why}")
                for check in art.checks:
                    verdict = (f": {check.metric} {check.value:.4g} (budget {check.budget:g})"
                               if check.metric and check.value is not None else
                               f": {check.metric} {'passed' if check.passed else 'FAILED'}"   # a structural check
                               if check.metric and check.passed is not None else "")
                    print(f"         checked: {check.executed}{verdict}")
                    if check.details.get("verified"):
                        print(f"           verified: {check.details['verified']}")
                    if check.not_executed:
                        print(f"         limits: {check.not_executed}")
            print(f"    decision: {entry.decision}")
            print_candidates(mapping(manifest.metrics.get("candidates")).get(entry.role))
            print_choice(record, entry.role)
        for item in manifest.files:
            print(f"  file: {item.path} {item.bytes} B sha256 {item.sha256[:12]}")
        pictures = mapping(manifest.metrics.get("pictures"))
        if pictures:
            print(f"  pictures: {pictures.get('how')}")
        print(f"  tools: {', '.join(f'{k} {v}' for k, v in prov.tools.items())}")
        print(f"  on this device: {device_summary(bundle, record, state_dir)}")
        print("verified: all files match their sha256" if not problems else "")
    if problems:
        raise BundleError(f"{args.bundle}: {len(problems)} problem(s): " + "; ".join(problems))
    return 0


def mapping(value: object) -> dict:
    """`metrics` is the converter's free-form record: a hand-edited manifest may hold anything there, and what
    is not the expected table is simply not shown."""
    return value if isinstance(value, dict) else {}


def print_candidates(rows: object) -> None:
    """The converter's candidate table (converters/selection.py): every artifact the profile listed, its metric
    against FP32, its latency timed side by side on the conversion host, and why it ships or not."""
    if not isinstance(rows, list) or not rows:
        return
    try:
        print_candidate_rows(rows)
    except (AttributeError, KeyError, TypeError, ValueError):    # a table not in the converter's form
        print(f"    candidates: {one_line(json.dumps(rows, ensure_ascii=False), 300)}")


def print_candidate_rows(rows: list[dict]) -> None:
    threads = sorted({t for row in rows for t in row.get("latency_ms", {})}, key=int)
    at = "/".join(threads)
    print(f"    candidates (ms at {at or '-'} thread(s) on the conversion host, side by side; x = ratio to "
          "onnxruntime fp32):")
    for row in rows:
        if row.get("value") is not None:
            metric = f"{row['metric']} {row['value']:.4g} (budget {row['budget']:g})"
        else:
            metric = row.get("metric") or "-"
        ms = "/".join(f"{row['latency_ms'][t]:.2f}" for t in threads) if row.get("latency_ms") else "-"
        ratio = "/".join(f"{row['ratio_vs_onnxruntime_fp32'][t]:.2f}x" for t in threads) if row.get(
            "ratio_vs_onnxruntime_fp32") else "-"
        print(f"      {row['artifact']:<28} {row['status']:<11} {ms:>15} ms {ratio:>13}  {metric}")
        print(f"         {row['why']}")


def print_choice(record: BenchRecord | None, role: str) -> None:
    """What this device's `edge bench` chose for the model, and why (nothing without a record)."""
    choice = next((c for c in record.roles if c.role == role), None) if record else None
    if choice is not None:
        print(f"    chosen on this device: {choice.chosen}: {choice.reason}")


def device_summary(bundle: Bundle, record: BenchRecord | None, state_dir: Path) -> str:
    samples = f"; {len(bundle.manifest.samples)} sample picture(s) for edge bench" if bundle.manifest.samples else ""
    if record is None:
        return f"no edge bench record in {state_dir}: the bundle's order, filtered by what loads here{samples}"
    return f"the artifacts edge bench chose on {record.created} ({record_path(bundle, state_dir)}){samples}"
