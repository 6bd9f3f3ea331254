"""Legacy Paddle program -> Paddle Lite `.nb` with the toolchain's `paddle_lite_opt`.

Interface (for any builder of `.nb` files):
    nb = PaddleLiteOptPass(targets=("arm",), fp16=False).run(legacy, ctx)
  - in: a "paddle-legacy" ModelFile (`X.pdmodel`, weights `X.pdiparams` beside it); a PIR program
    must go through converters/passes/pir_to_legacy.py first (opt aborts on PIR `.json`).
  - targets: opt's --valid_targets (None: the profile's `paddle_lite.valid_targets`, ctx.target);
    fp16: pass `--enable_fp16 true` (None: when ctx.target.precision is "fp16").
  - out: ModelFile(`<workdir>/<role>.paddle_lite/<stem>.<targets>.<precision>.nb`, "paddle_lite",
    "fp16" when fp16 else the input's precision); notes["paddle_lite_opt"] holds the targets, the fp16
    flag, opt's version, seconds, bytes, `op_report`: opt's own `--print_model_ops` table for these
    targets (per operator, the kernel places that support it) and its verdict line, and `kernels`: the
    kernels opt chose, read from the written `.nb` (counts per target/precision, and the operators it
    runs in FP16), which is how an FP16 file is shown to hold FP16 kernels without running it.
  - An operator opt does not support for the targets, a crash or a timeout is one ConversionError
    line with opt's reason. The toolchain is located, never installed here: without it the error
    says `edge toolchain install paddle-lite`.
`.nb` files are not byte-reproducible: opt writes a value that changes on every run at header offsets
11-14 (0-based; `cmp` calls them bytes 12-15).
"""
from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from runtimes.errors import ConversionError

from .base import ModelFile, Pass, PassContext

TIMEOUT_S = 600            # PP models take 0.3-10 s on 2 cores; a hung opt must not hang a convert
REPORT_TIMEOUT_S = 120
SUPPORTED_LINE = "Paddle-Lite supports this model!"
# A `.nb` names each operator's chosen kernel as "op/alias/target/precision/layout" (Paddle Lite's
# lite_api TargetType and PrecisionType numbers, paddle_place.h)
KERNEL = re.compile(rb"([a-z][a-z0-9_]*)/([A-Za-z0-9_]+)/(\d{1,2})/(\d{1,2})/(\d)")
TARGETS = {1: "host", 2: "x86", 4: "arm", 5: "opencl", 6: "any"}
PRECISIONS = {1: "float", 2: "int8", 3: "int32", 4: "any", 5: "fp16", 6: "bool", 7: "int64", 8: "int16"}


def _opt() -> tuple[list[str], dict[str, str], str]:
    from ..toolchains.paddle_lite import opt_command, paddle_lite_env, ready_info

    return opt_command(), paddle_lite_env(), f"paddlelite {ready_info().get('paddlelite', '?')}"


def _run(argv: list[str], env: dict[str, str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{what}: paddle_lite_opt did not finish within {timeout:.0f} s") from None


def opt_reason(proc: subprocess.CompletedProcess) -> str:
    """The line of opt's output that says why it failed (it aborts with SIGABRT after printing it)."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    said = next((ln for ln in lines if ln.startswith("Error:")), None)
    fatal = next((re.sub(r"^\[F [^\]]*\]\s*", "", ln) for ln in lines if ln.startswith("[F ")), None)
    reason = said or fatal or (lines[-1] if lines else "no output")
    code = proc.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
        else f"exit {code}"
    return f"{reason[:400]} ({how})"


def parse_op_report(text: str) -> dict:
    """opt --print_model_ops: a table `OP_name kARM kHost ...` with Y marks, then a verdict line."""
    lines = text.splitlines()
    header = next((i for i, ln in enumerate(lines) if ln.split()[:1] == ["OP_name"]), None)
    ops: dict[str, list[str]] = {}
    if header is not None:
        places = lines[header].split()[1:]
        starts = [lines[header].index(p) for p in places]
        for line in lines[header + 1:]:
            if not line.strip() or line.lstrip().startswith(("Paddle-Lite", "Error")):
                break
            name = line.split()[0]
            # a Y sits right-aligned under its column's name
            ops[name] = [p for p, s in zip(places, starts) if line[s:s + len(p)].strip() == "Y"]
    verdict = next((ln.strip() for ln in lines if ln.strip().startswith((SUPPORTED_LINE, "Error:"))), "")
    unsupported = re.findall(r"'([^']+)'", verdict.split("unsupported ops are:")[-1]) \
        if "unsupported ops are:" in verdict else []
    return {"supported": verdict == SUPPORTED_LINE, "verdict": verdict, "operators": len(ops), "ops": ops,
            "unsupported": unsupported}


def kernel_summary(nb: Path) -> dict:
    """Which kernels opt put into a `.nb`: counts per target/precision, and the operators run in FP16."""
    places: dict[str, int] = {}
    fp16_ops: dict[str, int] = {}
    for op, _, target, precision, _ in KERNEL.findall(nb.read_bytes()):
        name = (f"{TARGETS.get(int(target), 'target' + target.decode())}/"
                f"{PRECISIONS.get(int(precision), 'precision' + precision.decode())}")
        places[name] = places.get(name, 0) + 1
        if int(precision) == 5:
            fp16_ops[op.decode()] = fp16_ops.get(op.decode(), 0) + 1
    return {"kernels": sum(places.values()), "by_place": dict(sorted(places.items())),
            "fp16_ops": dict(sorted(fp16_ops.items()))}


class PaddleLiteOptPass(Pass):
    name = "paddle_lite_opt"

    def __init__(self, targets: tuple[str, ...] | None = None, fp16: bool | None = None):
        self.targets, self.fp16 = targets, fp16

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        if model.format != "paddle-legacy":
            raise ConversionError(f"{ctx.role} model: Paddle Lite's opt reads legacy Paddle programs, not "
                                  f"{model.format} ({model.path.name})")
        targets = tuple(self.targets or ctx.target.paddle_lite_targets)
        if not targets:
            raise ConversionError(f"profile {ctx.target.profile}: names no paddle_lite.valid_targets")
        fp16 = ctx.target.precision == "fp16" if self.fp16 is None else self.fp16
        params = model.path.with_suffix(".pdiparams")
        if not params.is_file():
            raise ConversionError(f"{ctx.role} model: no {params.name} beside {model.path.name}")
        opt, env, version = _opt()
        what = f"{ctx.role} model: opt for {','.join(targets)}{' fp16' if fp16 else ''}"
        common = ["--model_file", str(model.path), "--param_file", str(params), "--valid_targets", ",".join(targets)]
        # the report exits non-zero even for a supported model: its text is the result
        shown = _run(opt + common + ["--print_model_ops", "true"], env, REPORT_TIMEOUT_S, what)
        report = parse_op_report(shown.stdout + "\n" + shown.stderr)
        precision = "fp16" if fp16 else model.precision
        folder = ctx.workdir / f"{ctx.role}.paddle_lite"
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{model.path.stem}.{'-'.join(targets)}.{precision}"
        nb = out.with_name(out.name + ".nb")
        nb.unlink(missing_ok=True)
        started = time.monotonic()
        proc = _run(opt + common + ["--enable_fp16", "true" if fp16 else "false", "--optimize_out", str(out)],
                    env, TIMEOUT_S, what)
        seconds = round(time.monotonic() - started, 2)
        if proc.returncode != 0 or not nb.is_file():
            raise ConversionError(f"{what}: {opt_reason(proc)}")
        notes = {"valid_targets": list(targets), "fp16": fp16, "opt": version, "seconds": seconds,
                 "bytes": nb.stat().st_size, "op_report": report, "kernels": kernel_summary(nb)}
        ctx.progress(f"{ctx.role}: opt {','.join(targets)}{' fp16' if fp16 else ''}: {nb.name} "
                     f"({nb.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s)")
        return ModelFile(nb, "paddle_lite", precision, {**model.notes, "paddle_lite_opt": notes})
