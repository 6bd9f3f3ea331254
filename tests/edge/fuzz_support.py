"""What the fuzz tests (tests/edge/test_fuzz_*.py) and bench/fuzz.py share: hypothesis strategies that mutate
real inputs, the tally of what each input got, and the judge of "one clear line".

An input is *answered* when the product accepted it or refused it with one clear line (an exit code 2 line,
an EdgeError, an MQTT error reply); it is a *crash* when anything else happened (another exception, another
exit code, several lines, an "internal error" reply); a *traceback* is a crash that also printed or logged one.
The tests run reduced counts and fail on the first crash (hypothesis shrinks it); the bench runs the full counts
and tallies instead of failing.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO_ROOT, SHARED_DIR, write_fp32_profile

LCNET_EXPORT = SHARED_DIR / "models" / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
IMAGES = SHARED_DIR / "images"
GOOD_PICTURE = IMAGES / "cls_img_rot0_demo.jpg"
MAX_LINE = 1200               # a clear error line is shorter than this (cli.py shortens what is longer)

# Text that has broken parsers and path handling before: home folders of nobody, names over NAME_MAX,
# NUL bytes, separators, URLs with impossible ports, source strings with bad options, formats of YAML 1.1.
HOSTILE_TEXT = ["", " ", "~", "~nosuchuser/x", "~nosuchuser", "x" * 5000, "a" * 300, "/" + "a" * 300,
                "a/" * 2100, "\x00", "a\x00b", "..", "../../etc/passwd", "/etc/passwd", "/proc/self/mem", "/dev/null",
                "mqtt://", "mqtts://h:99999", "mqtt://h:-1", "mqtt://:1883", "mqtt://[::1", "mqtt://h:1883/x?y",
                "rtsp://", "camera:-1", "camera:x", "list:", "serial:", "serial:/dev/nope?camera=0&baud=x",
                "video:/nope.mp4?fps=-1&every=0", "folder:?poll=", "0x10", "1e999", "-.inf", ".nan", "yes", "~/",
                "\u202e", "💥", "\t", "\n", "{", "[", "*", "&a", "!!binary", "%YAML 1.1"]


def json_values(max_leaves: int = 6) -> st.SearchStrategy:
    """Any JSON value, hostile strings and numbers at the edges included."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False), st.floats(0, 1), st.text(max_size=20), st.sampled_from(HOSTILE_TEXT))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=max_leaves)


@st.composite
def mutated_bytes(draw, data: bytes, max_ops: int = 4, header: int | None = None) -> bytes:
    """`data` after 1..max_ops of: bit flip, byte set, deletion, insertion, duplication, truncation.
    `header`: positions are drawn from the first `header` bytes half of the time (where formats keep sizes)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        end = len(buf) - 1
        if header and draw(st.booleans()):
            end = min(end, header - 1)
        at = draw(st.integers(0, max(end, 0)))
        op = draw(st.sampled_from(("flip", "set", "delete", "insert", "duplicate", "truncate")))
        if not buf:
            op = "insert"
        if op == "flip":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[at] = draw(st.sampled_from((0, 0xFF, 0x7F, 0x80, ord("{"), ord("\n"), ord('"'), ord(":"))))
        elif op == "delete":
            del buf[at:at + draw(st.integers(1, 16))]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "duplicate":
            buf[at:at] = buf[at:at + draw(st.integers(1, 64))]
        else:
            del buf[at:]
    return bytes(buf)


def _slots(tree: Any, path: tuple = ()) -> list[tuple]:
    """Every (path to a container, key) in a JSON-like tree; the root itself is ((), None)."""
    found: list[tuple] = [(path, None)] if not path else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        found.append((path, key))
        found += _slots(value, path + (key,))
    return found


def _at(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@st.composite
def mutated_tree(draw, base: Any, values: st.SearchStrategy | None = None, max_ops: int = 3) -> Any:
    """A deep copy of a JSON-like `base` after 1..max_ops of: replace a value, delete a key or item, add a
    key, wrap a value in a list, or turn a container into a scalar."""
    values = values if values is not None else json_values()
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_ops))):
        path, key = draw(st.sampled_from(_slots(tree)))
        if key is None:                      # the root: replace it, rarely
            tree = draw(values)
            continue
        parent = _at(tree, path)
        op = draw(st.sampled_from(("replace", "replace", "delete", "add", "wrap")))
        if op == "replace":
            parent[key] = draw(values)
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "type", "name", "path", draw(st.text(max_size=8))]))] = draw(values)
        else:
            parent.insert(key, draw(values))
    return tree


# --- the tally ---------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What a run of inputs got: accepted, refused with one clear line, or crashed (the first few kept)."""
    inputs: int = 0
    accepted: int = 0
    errors: int = 0
    crashes: int = 0
    tracebacks: int = 0
    examples: list[str] = field(default_factory=list)
    name: str = ""

    def named(self, name: str) -> "Tally":
        self.name = name
        return self

    def count(self, outcome: "Outcome") -> None:
        self.inputs += 1
        if outcome.crash:
            self.crashes += 1
            self.tracebacks += outcome.traceback
            if len(self.examples) < 5:
                self.examples.append(f"{outcome.crash} <- {outcome.given!r:.300}")
        elif outcome.error:
            self.errors += 1
        else:
            self.accepted += 1

    def line(self, what: str) -> str:
        return (f"{what:<30} inputs {self.inputs:>6}  accepted {self.accepted:>6}  errors answered {self.errors:>6}  "
                f"crashes {self.crashes}  tracebacks {self.tracebacks}")


@dataclass
class Outcome:
    given: Any                   # the input, for the report
    error: str | None = None     # the one clear line it was refused with
    crash: str | None = None     # what went wrong instead
    traceback: bool = False

    def check(self) -> "Outcome":
        """For a test: fail with the input when it crashed (hypothesis then shrinks the input)."""
        assert self.crash is None, f"{self.crash}\ninput: {self.given!r:.2000}"
        return self


def clear_line_problem(text: str) -> str | None:
    """Why `text` is not one clear error line, or None if it is."""
    if "Traceback" in text:
        return "a traceback"
    if not text.strip():
        return "an empty error"
    if "\n" in text.strip():
        return f"{len(text.strip().splitlines())} lines instead of one"
    if len(text) > MAX_LINE:
        return f"an error line of {len(text)} characters"
    if text.lower().startswith(("internal error", "edge run: error: internal")):
        return "an internal error"
    return None


def judge(given: Any, action: Callable[[], Any], refusals: tuple[type[BaseException], ...]) -> Outcome:
    """Run `action` in this process: returning is acceptance, raising one of `refusals` with a clear message
    is an answered error, anything else (any other exception, a message that is not one clear line) a crash."""
    try:
        action()
    except refusals as err:
        problem = clear_line_problem(str(err))
        return Outcome(given, error=str(err), crash=problem and f"{type(err).__name__} with {problem}: {err}")
    except Exception as err:  # noqa: BLE001 - exactly what the fuzzer looks for
        return Outcome(given, crash=f"{type(err).__name__}: {err}"[:500], traceback=True)
    return Outcome(given)


def judge_cli(given: Any, argv: list[str], logs: "LogWatch") -> Outcome:
    """`edge.cli.main(argv)` in this process: exit 0, or exit 2 with one `edge ...: error:` line on stderr."""
    from edge.cli import main

    logs.clear()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as stop:
        code = stop.code
    except Exception as exc:  # noqa: BLE001
        return Outcome(given, crash=f"escaped main: {type(exc).__name__}: {exc}"[:500], traceback=True)
    if logs.tracebacks:
        return Outcome(given, crash=f"logged with a traceback: {logs.tracebacks[0]}"[:500], traceback=True)
    return judge_exit(given, code, err.getvalue())


def judge_exit(given: Any, code: int | None, stderr: str) -> Outcome:
    """A finished `edge` command: exit 0, or exit 2 with one `edge ...: error:` line on stderr."""
    if code == 0 and "Traceback" not in stderr:
        return Outcome(given)
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code != 2 or len(lines) != 1 or ": error: " not in lines[0]:
        return Outcome(given, crash=f"exit {code} with stderr {stderr[-800:]!r}", traceback="Traceback" in stderr)
    problem = clear_line_problem(lines[0])
    return Outcome(given, error=lines[0], crash=problem and f"stderr has {problem}: {lines[0][:300]}")


class LogWatch(logging.Handler):
    """Records every log record that carries a traceback (logged with exc_info), anywhere in the process."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.tracebacks.append(f"{record.name}: {record.getMessage()}")

    def clear(self) -> None:
        self.tracebacks.clear()

    def __enter__(self) -> "LogWatch":
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger().removeHandler(self)


def fuzz(strategy: st.SearchStrategy, examples: int, body: Callable[[Any], None], derandomize: bool = True) -> None:
    """Run `body` on `examples` inputs drawn from `strategy` (hypothesis, no example database, no deadline);
    derandomized (the same inputs each run) unless told otherwise, so CI cannot flake."""
    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(strategy)
    def run(value: Any) -> None:
        body(value)

    run()


# --- a real bundle -----------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def lcnet_bundle(folder: Path) -> Path:
    """PP-LCNet text orientation converted to an ONNX FP32 bundle by the real `edge convert` (about 5 s)."""
    out = folder / "lcnet"
    if not (out / "manifest.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        profile = write_fp32_profile(folder)
        proc = subprocess.run([sys.executable, "-m", "edge", "convert", str(LCNET_EXPORT), "--profile", str(profile),
                               "--val", str(IMAGES), "-o", str(out), "--quiet"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"edge convert failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return out


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
