"""INT8 OpenVINO IR by NNCF post-training quantization, judged with the family metric, with float fallback.

1. nncf.quantize on the f32 IR with the family's calibration inputs (the `--calib` pictures), the preset
   from the profile's scheme (u8 activations: MIXED, asymmetric activations; s8: PERFORMANCE, symmetric),
   once per activation range estimator in RANGES; each candidate judged on the held-out pictures in
   OpenVINO (f32 for what stays float, as the device runs an int8 IR).
   Measured on PicoDet-S-320 COCO (12 calibration inputs from 4 street photos, judged on 4 people photos,
   box F1 vs FP32): HISTOGRAM 0.57-0.88, MINMAX 0.36-0.52, MEAN_MINMAX 0.36-0.52, MEAN_QUANTILE 0.21-0.62;
   on PP-LCNet orientation every setting kept top-1 agreement 1.0. So HISTOGRAM first, MINMAX second.
2. If none meets the budget: the quantized operations whose return to float lowers the outputs' error
   against the f32 IR the most (each tried alone on calibration inputs, all in one gated model:
   worst_operations) are put back in float in the INT8 IR itself (revert_to_float: quantizers in front of
   them bypassed, weights and biases from the f32 IR), the worst 1, 2, 4, ... as converters/passes/quantize.py
   keeps ONNX nodes in float, until a candidate meets the budget or more float operations stop helping.
   PicoDet (4 street photos calibrating, 4 people photos judging): 8 operations back in float, box F1 0.57 ->
   0.97, the whole INT8 build 66 s; calibrated on 8 and judged on the other 8 of ../shared/images it stalled
   at 0.67 with 16 (refused).
   Not through NNCF's ignored scope: quantizing again without an operation moves its quantizer to the next
   one (measured on PicoDet: 1-32 operations ignored stayed at box F1 0.71-0.88).
   NNCF's own accuracy control (quantize_with_accuracy_control, the family metric as its validation_fn) was
   tried first: on PicoDet it reverted the two convolutions after the first MaxPool in 99-138 s when its
   greedy steps improved the metric, but after a step that does not it re-ranks every remaining operation
   (~100 s each here), and with a box F1 over 17 boxes that happened often enough for one run to pass 15
   minutes before it was stopped. This search is bounded: one ranking, at most len(SEARCH_STEPS) candidates.
"""
from __future__ import annotations

import io
import logging
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..families.base import Evaluation
from ..runners.openvino import OpenVinoRunner
from .base import PassContext
from .quantize import SEARCH_STEPS, STALE_STEPS

RANGES = ("HISTOGRAM", "MINMAX")
PRESETS = {"qdq-u8a-s8w": "MIXED", "qdq-s8a-s8w": "PERFORMANCE"}
DEFAULT_PRESET = "MIXED"
CALIBRATION_LIMIT = 16            # inputs, as converters/passes/quantize.py
RANKING_FEEDS = 2
GATE = "edge_quantizer_gate"
# operations that only move or pick values: a quantizer before them quantizes the inputs of what reads them
PASS_THROUGH = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "VariadicSplit",
                "StridedSlice", "Gather", "DepthToSpace", "SpaceToDepth", "ShuffleChannels", "Pad"}


@dataclass
class NncfCandidate:
    xml: Path
    setting: str                     # e.g. "MIXED preset, HISTOGRAM ranges"
    evaluation: Evaluation
    fp32_nodes: list[str] = field(default_factory=list)


@dataclass
class NncfResult:
    best: NncfCandidate | None
    tried: list[dict[str, Any]]
    seconds: float
    fallback: str                    # what the float fallback did, in words


def _quantizers_of(op) -> set:
    """The FakeQuantize operations (activations and weights) in front of `op`'s inputs, looking through operations
    that only move or pick values (a MaxPool between a quantizer and the convolutions that read it)."""
    found, todo = set(), [port.get_source_output().get_node() for port in op.inputs()]
    while todo:
        node = todo.pop()
        if node.get_type_name() == "FakeQuantize":
            found.add(node)
        elif node.get_type_name() in PASS_THROUGH:
            todo.extend(port.get_source_output().get_node() for port in node.inputs())
    return found


def _gated(int8_xml: Path):
    """The INT8 IR with a gate on every quantizer: what reads it gets x + gate[k] * (FakeQuantize(x) - x),
    `gate` a new input (1: quantized, 0: float); and, per quantized operation, the gates of its quantizers.
    One compiled model then tries every operation in float (a simulation in f32 arithmetic, for ranking only:
    the shipped IR has no gates)."""
    import openvino as ov
    import openvino.opset13 as ops
    model = ov.Core().read_model(str(int8_xml))
    quantizers = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    index = {fq.get_friendly_name(): k for k, fq in enumerate(quantizers)}
    fed = {}
    for op in model.get_ordered_ops():      # before the gates come between
        if op.get_type_name() not in PASS_THROUGH | {"FakeQuantize", "Result"}:
            gates = sorted(index[fq.get_friendly_name()] for fq in _quantizers_of(op))
            if gates:
                fed[op.get_friendly_name()] = gates
    gate = ops.parameter([len(quantizers)], ov.Type.f32, name=GATE)
    gate.output(0).get_tensor().set_names({GATE})
    for k, fq in enumerate(quantizers):
        x, q = fq.input_value(0), fq.output(0)
        inputs = list(q.get_target_inputs())
        weight = ops.gather(gate, ops.constant(np.int64(k)), ops.constant(np.int64(0)))
        mixed = ops.add(x, ops.multiply(weight, ops.subtract(q, x)))
        for port in inputs:
            port.replace_source_output(mixed.output(0))
    model.add_parameters([gate])
    model.validate_nodes_and_infer_types()
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), len(quantizers), fed


def _error(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean over outputs of the squared error relative to the reference output's power."""
    return float(np.mean([np.sum((o.astype(np.float64) - r) ** 2) / max(float(np.sum(r.astype(np.float64) ** 2)),
                                                                       1e-30) for o, r in zip(outputs, reference)]))


def worst_operations(f32_xml: Path, int8_xml: Path, feeds: list[dict]) -> list[tuple[str, float]]:
    """(quantized operation, how much the outputs' error vs the f32 IR falls when it alone runs in float: its
    input and weight quantizers left out), most harmful first. The effect on the outputs, as NNCF's accuracy
    control ranks operations, but every candidate in one compiled model (see _gated), in seconds.
    On PicoDet two local measures ranked badly: the per-channel SQNR of each activation quantizer found the
    convolutions quantize.py splits into channel groups, and the effect of activation quantizers alone
    ranked the first MaxPool's quantizer 69th; keeping their worst 1-32 in float stopped at box F1 0.76-0.88,
    while the two convolutions reading that MaxPool were what NNCF's accuracy control reverted (F1 1.0)."""
    import openvino as ov
    reference = ov.Core().compile_model(str(f32_xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    compiled, count, fed = _gated(int8_xml)
    request, outputs = compiled.create_infer_request(), len(reference.outputs)
    check = reference.create_infer_request()
    expectations = [[np.asarray(check.infer(feed)[i]) for i in range(outputs)] for feed in feeds]

    def error(gate: np.ndarray) -> float:
        errors = []
        for feed, expected in zip(feeds, expectations):
            ran = request.infer({**feed, GATE: gate})
            errors.append(_error([ran[i] for i in range(outputs)], expected))
        return float(np.mean(errors))

    everything = error(np.ones(count, np.float32))
    rows = []
    for name, gates in fed.items():
        gate = np.ones(count, np.float32)
        gate[gates] = 0.0
        rows.append((name, everything - error(gate)))
    return sorted(rows, key=lambda row: -row[1])


def _restore_constant(port, base_port) -> bool:
    """Feed `port` the f32 constant the f32 IR has at the same place (NNCF stores INT8 weights as int8 constants
    with a Convert and Multiply, and its bias correction rewrites biases)."""
    import openvino.opset13 as ops
    original = base_port.get_source_output().get_node()
    if original.get_type_name() != "Constant" or port.get_source_output().get_node() is original:
        return False
    if list(original.get_output_partial_shape(0).get_shape()) != list(port.get_partial_shape().get_shape()):
        return False
    port.replace_source_output(ops.constant(original.get_data()).output(0))
    return True


def revert_to_float(int8_xml: Path, base_xml: Path, names: list[str], out: Path) -> dict[str, int]:
    """`int8_xml` with the operations `names` back in float, written to `out`: the quantizers in front of them
    bypassed, their weights and the biases after them taken back from the f32 IR (what NNCF's accuracy control
    does when it reverts an operation). Nothing is quantized again: a quantizer that moved would move the error."""
    import openvino as ov
    model, base = ov.Core().read_model(str(int8_xml)), ov.Core().read_model(str(base_xml))
    original = {op.get_friendly_name(): op for op in base.get_ordered_ops()}
    done = {"quantizers_bypassed": 0, "constants_restored": 0}
    for op in [op for op in model.get_ordered_ops() if op.get_friendly_name() in names]:
        for fq in _quantizers_of(op):
            for reader in list(fq.output(0).get_target_inputs()):
                reader.replace_source_output(fq.input_value(0))
            done["quantizers_bypassed"] += 1
        twin = original.get(op.get_friendly_name())
        if twin is None or twin.get_input_size() != op.get_input_size():
            continue
        for port, base_port in zip(op.inputs(), twin.inputs()):
            done["constants_restored"] += _restore_constant(port, base_port)
        for reader in op.output(0).get_target_inputs():          # the bias Add after a convolution
            add = reader.get_node()
            add_twin = original.get(add.get_friendly_name())
            if add.get_type_name() == "Add" and add_twin is not None and add_twin.get_input_size() == 2:
                for port, base_port in zip(add.inputs(), add_twin.inputs()):
                    done["constants_restored"] += _restore_constant(port, base_port)
    model.validate_nodes_and_infer_types()
    ov.save_model(model, str(out), compress_to_fp16=False)
    return done


@contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF's INFO lines and its progress bars (rich, on stdout; NNCF has no switch for them) would flood
    `edge convert`'s output: both are held back while NNCF runs. (Nothing else prints on x86 builds meanwhile:
    the emulated-check pool serves aarch64 targets only.)"""
    import nncf
    nncf.set_log_level(logging.ERROR)
    with redirect_stdout(io.StringIO()):
        yield


class NncfQuantizer:
    def __init__(self, base_xml: Path, ctx: PassContext, threads: int):
        self.base_xml, self.ctx, self.threads = base_xml, ctx, threads
        opts = ctx.options
        self.family, self.fp32, self.val = opts["family"], opts["fp32_models"], list(opts["val_images"])
        self.folder = ctx.workdir / f"{ctx.role}.openvino"
        self.preset = PRESETS.get(ctx.target.quantization or "", DEFAULT_PRESET)
        calib = list(opts.get("calib_images") or [])
        limit = int(opts.get("calib_limit", CALIBRATION_LIMIT))
        self.feeds = self.family.calibration_feeds(ctx.role, self.fp32, calib, limit) if calib else []
        self.tried: list[dict[str, Any]] = []

    def _judge(self, xml: Path, setting: str, fp32_nodes: list[str] | None = None) -> NncfCandidate:
        runner = OpenVinoRunner(xml, self.threads, "int8", self.ctx.target.runtime.openvino)
        verdict = self.family.evaluate(self.ctx.role, self.fp32, runner, self.val)
        found = NncfCandidate(xml, setting, verdict, list(fp32_nodes or []))
        self.tried.append({"setting": setting, "value": round(verdict.value, 6), "passed": verdict.passed,
                           "fp32_nodes": len(found.fp32_nodes)})
        self.ctx.progress(f"{self.ctx.role}: NNCF INT8, {setting}: {verdict.describe()}")
        return found

    def _params(self, ranges: str):
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
        return AdvancedQuantizationParameters(
            activations_range_estimator_params=getattr(RangeEstimatorParametersSet, ranges))

    def quantize(self, ranges: str) -> NncfCandidate:
        import nncf
        import openvino as ov
        with quiet_nncf():
            model = nncf.quantize(ov.Core().read_model(str(self.base_xml)), nncf.Dataset(self.feeds),
                                  preset=getattr(nncf.QuantizationPreset, self.preset), subset_size=len(self.feeds),
                                  advanced_parameters=self._params(ranges))
        xml = self.folder / f"nncf.{self.preset.lower()}.{ranges.lower()}.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return self._judge(xml, f"{self.preset} preset, {ranges} ranges")

    def reverting(self, start: NncfCandidate, names: list[str]) -> NncfCandidate:
        """`start` with the operations `names` back in float (revert_to_float)."""
        xml = start.xml.with_name(f"{start.xml.stem}.float{len(names)}.xml")
        revert_to_float(start.xml, self.base_xml, names, xml)
        return self._judge(xml, f"{start.setting}, {len(names)} operations in float", names)

    def fallback(self, best: NncfCandidate) -> tuple[NncfCandidate, str]:
        """Put the most harmful quantized operations back in float, the worst 1, 2, 4, ... (as quantize.py
        searches), until a candidate passes or more float operations stop helping."""
        ranking = [name for name, _ in worst_operations(self.base_xml, best.xml, self.feeds[:RANKING_FEEDS])]
        found, stale, tried = best, 0, 0
        for count in SEARCH_STEPS:
            if count > len(ranking) or stale >= STALE_STEPS:
                break
            candidate, tried = self.reverting(best, ranking[:count]), count
            if candidate.evaluation.passed:
                return candidate, f"{count} operations kept in float: {candidate.evaluation.describe()}"
            stale = 0 if candidate.evaluation.rank > found.evaluation.rank else stale + 1
            found = max((found, candidate), key=lambda c: c.evaluation.rank)
        return found, (f"up to {tried} of {len(ranking)} quantized operations kept in float did not meet the budget "
                       f"(best: {found.evaluation.describe()})")

    def run(self, fallback: bool = True) -> NncfResult:
        started = time.perf_counter()
        if not self.feeds:
            return NncfResult(None, [], 0.0, "not run: no calibration pictures (give --calib)")
        self.folder.mkdir(parents=True, exist_ok=True)
        best = None
        for ranges in RANGES:
            found = self.quantize(ranges)
            best = found if best is None or found.evaluation.rank > best.evaluation.rank else best
            if found.evaluation.passed:
                break
        said = "not needed"
        if not best.evaluation.passed and not fallback:
            said = "not tried (turned off)"
        elif not best.evaluation.passed:
            best, said = self.fallback(best)
        return NncfResult(best, self.tried, round(time.perf_counter() - started, 1), said)
