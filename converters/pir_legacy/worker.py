"""`python -m converters.pir_legacy.worker`: PIR -> legacy, then prove the two programs equal.

Runs in a child process (paddle); prints one JSON line (converters/worker_call.py reads it).
The proof, both in Paddle Inference 3.3.1 on CPU with oneDNN and IR optimisation off (PIR programs
with interpolate cannot run under oneDNN in 3.3.1; PIR's and legacy's fusion passes differ, which
moves outputs by up to 4e-6 relative on these models, while the same operators on the same weights
give the same bits: max |diff| 0 on all five PIR fixtures):
  - every output of the legacy program on the given real inputs against the PIR program's;
  - the weights: the legacy `.pdiparams` byte-equal to the PIR one, else every tensor value-equal.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

RELATIVE_TOLERANCE = 1e-5


def _outputs(model: Path, params: Path, inputs) -> dict[str, list[np.ndarray]]:
    import paddle.inference as pi

    config = pi.Config(str(model), str(params))
    config.disable_mkldnn()
    config.disable_glog_info()
    config.switch_ir_optim(False)     # no fusion passes: PIR's and legacy's differ, the operators do not
    predictor = pi.create_predictor(config)
    names = predictor.get_input_names()
    if len(names) != 1:
        raise ValueError(f"the check feeds one input; this model has {len(names)} ({', '.join(names)})")
    results = {}
    for key in sorted(inputs.files):
        handle = predictor.get_input_handle(names[0])
        handle.reshape(inputs[key].shape)
        handle.copy_from_cpu(np.ascontiguousarray(inputs[key]))
        predictor.run()
        results[key] = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
    return results


def _compare(reference: dict, candidate: dict) -> dict:
    worst_abs, worst_rel, count = 0.0, 0.0, 0
    for key, outs in reference.items():
        if len(candidate[key]) != len(outs):
            raise ValueError(f"the legacy program has {len(candidate[key])} outputs, the PIR one {len(outs)}")
        for index, (ref, got) in enumerate(zip(outs, candidate[key])):
            if ref.shape != got.shape:
                raise ValueError(f"output {index}: legacy shape {got.shape}, PIR shape {ref.shape}")
            diff = float(np.max(np.abs(ref.astype(np.float64) - got))) if ref.size else 0.0
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-12))
            count += 1
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "outputs_compared": count}


def _tensors(scope, names) -> dict[str, np.ndarray]:
    return {n: np.array(scope.find_var(n).get_tensor()) for n in names if scope.find_var(n) is not None}


def _weights_equal(pir_model: Path, pir_params: Path, stem: Path) -> str:
    """'bytes' when the files are identical, 'values' when every tensor is; raises otherwise."""
    legacy_params = stem.with_suffix(".pdiparams")
    if legacy_params.read_bytes() == pir_params.read_bytes():
        return "bytes"
    import paddle

    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    pir_scope, legacy_scope = paddle.static.Scope(), paddle.static.Scope()
    with paddle.static.scope_guard(pir_scope):
        program, _, _ = paddle.static.load_inference_model(
            str(pir_model.parent), exe, model_filename=pir_model.name, params_filename=str(pir_params.resolve()))
        names = [op.attrs()["parameter_name"] for op in program.global_block().ops
                 if op.name() == "builtin.parameter"]
        ours = _tensors(pir_scope, names)
    with paddle.static.scope_guard(legacy_scope), paddle.pir_utils.OldIrGuard():
        paddle.static.load_inference_model(str(stem), exe)
        theirs = _tensors(legacy_scope, names)
    unequal = sorted(n for n in names if n not in theirs or not np.array_equal(ours[n], theirs[n]))
    if unequal:
        raise ValueError(f"{len(unequal)} weights differ after translation (first: {unequal[0]})")
    return "values"


def run(args: argparse.Namespace) -> dict:
    from .translate import translate

    model, params, stem = Path(args.model), Path(args.params), Path(args.out)
    report = translate(model, params, stem)
    report["weights_equal"] = _weights_equal(model, params, stem)
    inputs = np.load(args.inputs)
    reference = _outputs(model, params, inputs)
    candidate = _outputs(stem.with_suffix(".pdmodel"), stem.with_suffix(".pdiparams"), inputs)
    report.update(_compare(reference, candidate), inputs_compared=len(inputs.files),
                  tolerance_rel=RELATIVE_TOLERANCE)
    if report["max_rel_diff"] > RELATIVE_TOLERANCE:
        raise ValueError(f"the legacy program differs from the PIR one on real images (relative "
                         f"{report['max_rel_diff']:.2e} > {RELATIVE_TOLERANCE:.0e})")
    return report


def main() -> int:
    from ..paddle_worker import report_verdict

    parser = argparse.ArgumentParser(prog="python -m converters.pir_legacy.worker")
    parser.add_argument("command", choices=["pir-to-legacy"])
    for name in ("model", "params", "out", "inputs"):
        parser.add_argument(f"--{name}", required=True)
    return report_verdict(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
