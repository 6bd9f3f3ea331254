"""`edge inspect BUNDLE`: print the manifest's essentials and verify every hash."""
from __future__ import annotations

import argparse
import json

from runtimes.backends import why_not_loadable
from runtimes.bundle import Bundle
from runtimes.errors import BundleError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("inspect", help="show a bundle and verify its files")
    parser.add_argument("bundle")
    parser.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    parser.set_defaults(handler=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle, verify=False)
    manifest = bundle.manifest
    problems = bundle.verify()
    if args.json:
        print(json.dumps({"manifest": manifest.model_dump(mode="json"), "problems": problems}, ensure_ascii=False))
    else:
        prov = manifest.provenance
        print(f"bundle {args.bundle}: pipeline '{manifest.pipeline}' (task {manifest.task}), profile {prov.profile}, "
              f"made {prov.created}")
        for entry in manifest.models:
            print(f"  {entry.role}: {entry.name} from {entry.source_format}")
            for art in entry.artifacts:
                chosen = "->" if art.path == entry.selected else "  "
                metrics = ", ".join(f"{k}={v:.4g}" for k, v in art.metrics.items())
                print(f"    {chosen} {art.path} {art.format} {art.precision} ({art.target}) {art.bytes} B "
                      f"sha256 {art.sha256[:12]}{'  ' + metrics if metrics else ''}")
                why = why_not_loadable(art)
                print(f"         needs {art.backend} on the device; loads here: {'yes' if why is None else 'no, ' + why}")
                for check in art.checks:
                    verdict = (f": {check.metric} {check.value:.4g} (budget {check.budget:g})"
                               if check.metric and check.value is not None else "")
                    print(f"         checked: {check.executed}{verdict}")
                    if check.not_executed:
                        print(f"         not executed here: {check.not_executed}")
            print(f"    decision: {entry.decision}")
        for item in manifest.files:
            print(f"  file: {item.path} {item.bytes} B sha256 {item.sha256[:12]}")
        pictures = manifest.metrics.get("pictures", {})
        if pictures:
            print(f"  pictures: {pictures.get('how')}")
        print(f"  tools: {', '.join(f'{k} {v}' for k, v in prov.tools.items())}")
        print("verified: all files match their sha256" if not problems else "")
    if problems:
        raise BundleError(f"{args.bundle}: {len(problems)} problem(s): " + "; ".join(problems))
    return 0
