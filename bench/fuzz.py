"""Fuzzed inputs at volume (issue 14, section 3): counts of inputs, errors answered, crashes and tracebacks.

    python bench/fuzz.py [--only commands,configs,manifests,serial,images] [--scale 0.1] [--seed-random]

Full counts: 10,000 payloads on every `cmd/<name>` through a real mosquitto into a running daemon, 2,000 mutated
config files through `edge run --check` (a few through the installed command too), 2,000 mutated manifests through
`edge inspect` and Bundle.open/load_task, 2,000 bursts of serial trigger lines, 1,000 bit-flipped or truncated
pictures through `edge infer` and 1,000 through the daemon. After each daemon run a good picture must still give a
result. `--scale` multiplies every count (0.1 for a quick look). Inputs are random each run (hypothesis, no
database); the tests in tests/edge/test_fuzz_*.py run reduced, fixed sets.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.edge import fuzz_daemon, fuzz_inputs  # noqa: E402
from tests.edge.fuzz_support import LogWatch, Tally, fuzz, lcnet_bundle  # noqa: E402

FULL = {"commands": 10_000, "configs": 2_000, "manifests": 2_000, "serial": 2_000, "images": 1_000}
CONFIG_SUBPROCESS = 20
IMAGE_BATCH = 100


def fuzz_configs(count: int, bundle: Path, work: Path, random: bool) -> list[Tally]:
    base = fuzz_inputs.config_base(bundle, work / "config")
    tally, installed = Tally(), Tally()
    with LogWatch() as logs:
        fuzz(fuzz_inputs.config_texts(base), count,
             lambda text: tally.count(fuzz_inputs.check_config(text, work / "edge.yaml", logs)), not random)
    fuzz(fuzz_inputs.config_texts(base), min(CONFIG_SUBPROCESS, count),
         lambda text: installed.count(fuzz_inputs.check_config_subprocess(text, work / "edge-cli.yaml")), not random)
    return [tally.named("configs, edge run --check"), installed.named("configs, python -m edge")]


def fuzz_manifests(count: int, bundle: Path, work: Path, random: bool) -> list[Tally]:
    folder = fuzz_inputs.manifest_copy(bundle, work / "manifest-bundle")
    tally = Tally()
    with LogWatch() as logs:
        fuzz(fuzz_inputs.manifest_texts(bundle), count,
             lambda text: tally.count(fuzz_inputs.check_manifest(text, folder, work / "state", logs)), not random)
    return [tally.named("manifests, inspect + load")]


def fuzz_serial(count: int, _bundle: Path, work: Path, random: bool) -> list[Tally]:
    serial, tally = fuzz_inputs.SerialBench(work / "serial"), Tally()
    try:
        with LogWatch() as logs:
            fuzz(fuzz_inputs.serial_lines(), count, lambda lines: tally.count(serial.check(lines, logs)), not random)
    finally:
        serial.close()
    return [tally.named("serial line bursts")]


def draw_pictures(count: int, work: Path, random: bool) -> list[tuple[str, bytes]]:
    forms = fuzz_inputs.picture_forms(work / "forms")
    pictures: list[tuple[str, bytes]] = []
    fuzz(fuzz_inputs.mutated_pictures(forms), count, pictures.append, not random)
    return pictures


def fuzz_images(count: int, bundle: Path, work: Path, random: bool) -> list[Tally]:
    pictures = draw_pictures(count, work, random)
    infer = Tally()
    for start in range(0, len(pictures), IMAGE_BATCH):
        paths = fuzz_inputs.write_pictures(pictures[start:start + IMAGE_BATCH], work / f"infer{start}")
        for outcome in fuzz_inputs.check_infer(bundle, paths, work / "state"):
            infer.count(outcome)
    daemon = fuzz_daemon.pictures_through_daemon(bundle, pictures, work / "daemon-images")
    return [infer.named("pictures, edge infer"), daemon.named("pictures, daemon")]


def fuzz_commands(count: int, bundle: Path, work: Path, random: bool) -> list[Tally]:
    return fuzz_daemon.commands_through_daemon(bundle, count, work / "daemon-commands", random)


RUNS = {"commands": fuzz_commands, "configs": fuzz_configs, "manifests": fuzz_manifests, "serial": fuzz_serial,
        "images": fuzz_images}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated: " + ", ".join(RUNS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count by this")
    parser.add_argument("--fixed", action="store_true", help="the tests' fixed inputs instead of random ones")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(RUNS))
    if unknown:
        parser.error(f"no such run(s): {', '.join(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="edge-fuzz-"))
    bundle = lcnet_bundle(work / "bundle")
    tallies: list[Tally] = []
    for name in chosen:
        started = time.monotonic()
        count = max(1, round(FULL[name] * args.scale))
        found = RUNS[name](count, bundle, work, not args.fixed)
        for tally in found:
            print(tally.line(tally.name) + f"  ({time.monotonic() - started:.0f} s)", flush=True)
            for example in tally.examples:
                print(f"    crash: {example}", flush=True)
        tallies += found
    crashes = sum(t.crashes for t in tallies)
    print(f"total: {sum(t.inputs for t in tallies)} inputs, {sum(t.errors for t in tallies)} errors answered, "
          f"{crashes} crashes, {sum(t.tracebacks for t in tallies)} tracebacks; work folder {work}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
