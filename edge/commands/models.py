"""`edge models list [--json]` and `edge models pull NAME... [--base-url URL] [--force]` (edge.zoo)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="the official PP model exports edge can download by name")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every zoo name: family, what it is, pulled or not")
    listing.add_argument("--json", action="store_true", help="one JSON list with URLs and cache paths")
    listing.set_defaults(handler=list_models)
    pull = actions.add_parser("pull", help="download, verify and unpack exports into the cache "
                                           "(resumes an interrupted download)")
    pull.add_argument("names", nargs="+", metavar="NAME", help="zoo name or group (edge models list)")
    pull.add_argument("--base-url", help="fetch the same file names from this mirror (default: EDGE_ZOO_URL, "
                                         "else the publishers' URLs)")
    pull.add_argument("--force", action="store_true", help="download and unpack again even when cached")
    pull.add_argument("--quiet", action="store_true", help="no progress on stderr")
    pull.set_defaults(handler=pull_models)


def download_progress(quiet: bool) -> Callable[[str, int, int | None], None]:
    """Progress of each file on stderr: one rewritten line on a terminal, a line per quarter otherwise."""
    tty = sys.stderr.isatty()
    state = {"what": None, "start": 0.0, "shown": -1}

    def show(what: str, done: int, total: int | None) -> None:
        if quiet:
            return
        if what != state["what"]:
            state.update(what=what, start=time.monotonic(), shown=-1, first=done)
        rate = (done - state["first"]) / max(time.monotonic() - state["start"], 1e-3) / 1e6
        share = f" ({100 * done / total:3.0f}%)" if total else ""
        line = f"{what}: {done / 1e6:.1f}/{(total or 0) / 1e6:.1f} MB{share} {rate:.1f} MB/s"
        if tty:
            end = "\n" if total and done >= total else ""
            print(f"\r{line}", end=end, file=sys.stderr, flush=True)
            return
        quarter = 4 * done // total if total else 0
        if quarter != state["shown"]:
            state["shown"] = quarter
            print(line, file=sys.stderr, flush=True)

    return show


def list_models(args: argparse.Namespace) -> int:
    from ..zoo import effective_url, load, zoo_dir

    catalog = load()
    rows = []
    for name, model in catalog.models.items():
        folder = zoo_dir() / "models" / name
        pulled = (folder / ".edge-zoo.json").is_file()
        rows.append({"name": name, "family": model.family, "summary": model.summary,
                     "url": effective_url(model.url), "sha256": model.sha256, "docs": model.docs,
                     "pulled": str(folder) if pulled else None})
    if args.json:
        print(json.dumps({"models": rows, "groups": catalog.groups}, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['family']:<16} {'pulled' if r['pulled'] else '-':<6}  {r['summary']}")
    for group, members in catalog.groups.items():
        print(f"{group:<{width}}  group: {' '.join(members)}")
    return 0


def pull_models(args: argparse.Namespace) -> int:
    from ..zoo import ZooError, load, pull

    catalog = load()
    names = []
    for requested in args.names:
        expanded = catalog.expand(requested)
        if expanded is None:
            raise ZooError(f"no model or group '{requested}' in the zoo (edge models list shows the names)")
        names += [n for n in expanded if n not in names]
    progress = download_progress(args.quiet)
    for name in names:
        pulled = pull(name, base_url=args.base_url, force=args.force, progress=progress)
        state = "cached" if pulled.cached else "pulled"
        print(f"{name}: {state} {pulled.folder} (sha256 {pulled.sha256[:16]}..., {pulled.check})")
    return 0
