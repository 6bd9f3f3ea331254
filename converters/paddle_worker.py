"""Runs Paddle-side work in a child process: `python -m converters.paddle_worker to-onnx|infer ...`.

Why a child process: paddle takes seconds to import, holds hundreds of MB, prints to the
terminal from C++, and can abort the whole process on a bad program. The parent stays clean and
turns a failure into one readable error line.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path


def _f64_scales_to_f32(node: object) -> int:
    """paddle2onnx 2.1.0 expects interp `scale` arrays as f32; Paddle 3.3.1's translator writes f64."""
    fixed = 0
    if isinstance(node, dict):
        if str(node.get("#", "")).endswith("_interp"):
            for attr in node.get("A", []):
                value = attr.get("AT", {})
                if attr.get("N") == "scale" and value.get("#") == "0.a_array":
                    for element in value.get("D", []):
                        if element.get("#") == "0.a_f64":
                            element["#"] = "0.a_f32"
                            fixed += 1
        for child in node.values():
            fixed += _f64_scales_to_f32(child)
    elif isinstance(node, list):
        for child in node:
            fixed += _f64_scales_to_f32(child)
    return fixed


def _legacy_to_pir(model: Path, params: Path, workdir: Path) -> tuple[Path, Path]:
    import paddle
    from paddle2onnx.convert import load_parameter, save_program

    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.pir_utils.OldIrGuard():
        program, _, _ = paddle.static.load_inference_model(
            str(model.parent), exe, model_filename=model.name, params_filename=params.name)
    pir_program = paddle.pir.translate_to_pir(program.desc)
    load_parameter(pir_program)
    stem = workdir / "translated"
    save_program(pir_program, str(stem))
    return stem.with_suffix(".json"), stem.with_suffix(".pdiparams")


def to_onnx(args: argparse.Namespace) -> dict:
    from paddle2onnx import paddle2onnx_cpp2py_export as c_p2o

    model, params, out = Path(args.model), Path(args.params), Path(args.out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        workdir = Path(tmp)
        if model.suffix == ".pdmodel":
            program_json, params = _legacy_to_pir(model, params, workdir)
        else:
            program_json = model
        program = json.loads(program_json.read_text(encoding="utf-8"))
        fixed = _f64_scales_to_f32(program)
        patched = workdir / "patched.json"
        patched.write_text(json.dumps(program), encoding="utf-8")
        onnx_bytes = c_p2o.export(str(patched), str(params), args.opset, True, False, True, True, True,
                                  {}, "onnxruntime", "", "", False)
    if not onnx_bytes:
        raise RuntimeError("paddle2onnx produced no model")
    out.write_bytes(onnx_bytes)
    return {"interp_scale_attrs_f64_to_f32": fixed, "opset": args.opset}


def infer(args: argparse.Namespace) -> dict:
    """Paddle Inference on saved inputs (npz) -> outputs (npz), the reference the ONNX must equal."""
    import numpy as np
    import paddle.inference as pi

    model, params = Path(args.model), Path(args.params)
    config = pi.Config(str(model), str(params))
    config.disable_mkldnn()   # PIR programs with interpolate fail under oneDNN in Paddle 3.3.1
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    inputs = np.load(args.inputs)
    results = {}
    for key in sorted(inputs.files):
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(inputs[key].shape)
        handle.copy_from_cpu(np.ascontiguousarray(inputs[key]))
        predictor.run()
        for index, name in enumerate(predictor.get_output_names()):
            results[f"{key}__{index}"] = predictor.get_output_handle(name).copy_to_cpu()
    np.savez(args.out, **results)
    return {"outputs": len(results)}


def essence(err: Exception) -> str:
    """Paddle's messages start with a Python stack ("In user code: ..."); find the line that says what broke."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = [line for line in lines if re.match(r"^(\(\w+\)|\w*(Error|Exception)\b)", line)]
    chosen = telling[-1] if telling else (lines[0] if lines else "")
    return f"{type(err).__name__}: {chosen}" if not chosen.startswith(type(err).__name__) else chosen


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.paddle_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("to-onnx", "infer"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--model", required=True)
        cmd.add_argument("--params", required=True)
        cmd.add_argument("--out", required=True)
        cmd.add_argument("--opset", type=int, default=13)
        cmd.add_argument("--inputs")
    args = parser.parse_args()
    return report_verdict(to_onnx if args.command == "to-onnx" else infer, args)


def report_verdict(work, args: argparse.Namespace) -> int:
    """Run one worker command and print its one-line JSON verdict (converters/worker_call.py reads it)."""
    try:
        report = work(args)
    except Exception as err:  # the parent shows this line to the user
        print(json.dumps({"ok": False, "error": essence(err)}))
        return 1
    print(json.dumps({"ok": True, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
