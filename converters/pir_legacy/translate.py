"""Write a Paddle 3 PIR inference program as a legacy ProgramDesc (`.pdmodel` + `.pdiparams`).

Runs inside a child process (it imports paddle). Paddle 3.3.1 translates legacy programs to PIR
(`paddle.pir.translate_to_pir`) but not back, and `paddle.jit.save` of a loaded PIR model writes
PIR again whatever FLAGS_enable_pir_api says; Paddle Lite's `opt` reads only ProgramDesc. So this
walks the PIR program op by op (rules.py says how each is written) and appends the legacy
operators to a fresh legacy Program, under `paddle.pir_utils.OldIrGuard`.

The weights are not converted at all: legacy parameters get the PIR parameter names, and the
tensors that `load_inference_model` put into the global scope are saved from that same scope.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rules import DROPPED_ATTRS, RULES, STRUCTURAL, Rule, untranslatable


class TranslationError(Exception):
    """One line naming what could not be written as legacy operators."""


@dataclass
class Const:
    value: Any              # float for `full`, list of ints for `full_int_array`
    op: Any                 # the PIR op that made it, materialized as a legacy tensor when needed


def _dtype(value) -> str:
    return str(value.dtype).replace("paddle.", "")


def _shape(value) -> list[int]:
    try:
        return [int(d) for d in value.shape]
    except (ValueError, TypeError):
        return []


class _Writer:
    """Keeps the PIR value -> legacy variable map while appending legacy operators to `block`."""

    def __init__(self, paddle, block):
        self.paddle, self.block = paddle, block
        self.values: dict[str, Any] = {}       # PIR value id -> legacy name | Const | list
        self.feeds: list = []
        self.fetches: list[tuple[int, str]] = []
        self.counter = 0

    def fresh(self, stem: str, value=None, dtype: str = "float32") -> str:
        """A new legacy variable, typed like the PIR `value` (or `dtype`: a ProgramDesc var needs one)."""
        name = f"{stem}_{self.counter}.tmp"
        self.counter += 1
        if value is not None and value.initialized():
            self.block.create_var(name=name, shape=_shape(value), dtype=_dtype(value))
        else:
            self.block.create_var(name=name, dtype=dtype)
        return name

    def resolve(self, value):
        if value is None or not value.initialized():
            return None
        if value.id not in self.values:
            op = value.get_defining_op()
            raise TranslationError(f"value made by {op.name() if op else 'nothing'} is used before it is defined")
        return self.values[value.id]

    def tensor(self, item) -> str:
        """A legacy variable name for an operand; constants become fill_constant ops here."""
        if isinstance(item, str):
            return item
        if isinstance(item, Const) and not isinstance(item.value, list):
            out = item.op.results()[0]
            name = self.fresh("fill_constant", out)
            dtype = self.paddle.base.framework.convert_np_dtype_to_dtype_(_dtype(out))
            self.block.append_op(type="fill_constant", outputs={"Out": [name]},
                                 attrs={"shape": _shape(out) or [1], "dtype": dtype, "value": float(item.value),
                                        "str_value": repr(float(item.value))})
            return name
        raise TranslationError("an integer-array constant is used as a tensor, which is not translated")

    # -- structural operations -------------------------------------------------------------
    def structural(self, op) -> None:
        kind, attrs = op.name(), op.attrs()
        result = op.results()[0] if op.num_results() else None
        if kind == "builtin.parameter":
            name = attrs["parameter_name"]
            self.block.create_var(name=name, shape=_shape(result), dtype=_dtype(result), persistable=True)
            self.values[result.id] = name
        elif kind in ("pd_op.data", "pd_op.feed"):
            var = self.block.create_var(name=attrs["name"], shape=_shape(result), dtype=_dtype(result),
                                        need_check_feed=True)
            self.feeds.append(var)
            self.values[result.id] = attrs["name"]
        elif kind in ("pd_op.full", "pd_op.full_int_array"):
            self.values[result.id] = Const(attrs["value"], op)
        elif kind == "builtin.combine":
            self.values[result.id] = [self.resolve(v) for v in op.operands_source()]
        elif kind == "builtin.split":
            names = self.resolve(op.operands_source()[0])
            for value, name in zip(op.results(), names):
                self.values[value.id] = name
        elif kind == "pd_op.fetch":
            self.fetches.append((int(attrs["col"]), self.tensor(self.resolve(op.operands_source()[0]))))

    # -- operations with a rule ----------------------------------------------------------------
    def apply(self, op, rule: Rule) -> None:
        operands = dict(zip(op.get_input_names(), op.operands_source()))
        renames = dict(rule.attrs)
        attrs = {renames.get(k, k): v for k, v in op.attrs().items() if k not in DROPPED_ATTRS}
        attrs.update(rule.fixed)
        inputs: dict[str, list[str]] = {}
        for operand, slot in rule.inputs:
            item = self.resolve(operands.get(operand))
            if item is not None:
                inputs[slot] = [self.tensor(i) for i in item] if isinstance(item, list) else [self.tensor(item)]
        for operand, attr, slot in rule.folded:
            self._fold(op, self.resolve(operands.get(operand)), attr, slot, attrs, inputs)
        outputs = self._outputs(op, rule, operands)
        self.block.append_op(type=rule.legacy, inputs=inputs, outputs=outputs, attrs=attrs)

    def _fold(self, op, item, attr: str, slot: str, attrs: dict, inputs: dict) -> None:
        if item is None:
            return
        items = item if isinstance(item, list) else [item]
        if all(isinstance(i, Const) for i in items):
            if isinstance(item, list):
                attrs[attr] = [int(i.value) for i in items]
            elif isinstance(item.value, list):
                attrs[attr] = [int(v) for v in item.value]
            else:
                dtype = _dtype(item.op.results()[0])
                attrs[attr] = int(item.value) if "int" in dtype else float(item.value)
            return
        list_slot, _, tensor_slot = slot.partition("|")
        chosen = list_slot if isinstance(item, list) else (tensor_slot or list_slot)
        if not chosen:
            raise TranslationError(f"{op.name()}: its '{attr}' is computed at run time; the legacy operator "
                                   "needs a constant")
        inputs[chosen] = [self.tensor(i) for i in items]
        if isinstance(item, list):
            # the attribute still gives compile-time shape inference what is known, -1 for the rest,
            # as the legacy Python API writes it
            attrs[attr] = [int(i.value) if isinstance(i, Const) else -1 for i in items]

    def _outputs(self, op, rule: Rule, operands: dict) -> dict[str, list[str]]:
        results = dict(zip(op.get_output_names(), op.results()))
        inplace = dict(rule.inplace)
        outputs: dict[str, list[str]] = {}
        for result_name, slot in rule.outputs:
            if not result_name:      # XShape: legacy-only, typed like the op's input as the legacy API does
                first = op.operands_source()[0]
                outputs[slot] = [self.fresh(f"{rule.legacy}_{slot.lower()}", dtype=_dtype(first))]
                continue
            value = results.get(result_name)
            if value is None:
                continue
            if result_name in inplace:
                name = self.resolve(operands[inplace[result_name]])
            elif str(value.type()).startswith("vec["):
                name = [self.fresh(rule.legacy, piece) for piece in _pieces(value)]
            else:
                name = self.fresh(rule.legacy, value)
            self.values[value.id] = name
            outputs[slot] = name if isinstance(name, list) else [name]
        return outputs


def _pieces(vector) -> list:
    """The element values of a vector result (through its builtin.split), or placeholders."""
    for user in vector.all_used_ops():
        if user.name() == "builtin.split":
            return list(user.results())
    return [None] * str(vector.type()).count("tensor<")


def translate(model: Path, params: Path, out_stem: Path) -> dict:
    """PIR `model` (.json) + `params` -> `out_stem`.pdmodel/.pdiparams; returns what was written."""
    import paddle

    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    pir_program, _, _ = paddle.static.load_inference_model(
        str(model.parent), exe, model_filename=model.name, params_filename=str(params.resolve()))
    ops = list(pir_program.global_block().ops)
    missing = untranslatable(op.name() for op in ops)
    if missing:
        raise TranslationError(f"no legacy translation for {', '.join(missing)}")
    if any(op.num_regions() for op in ops):
        raise TranslationError("the program has control flow (sub-blocks), which is not translated")
    with paddle.pir_utils.OldIrGuard():
        legacy = paddle.static.Program()
        writer = _Writer(paddle, legacy.global_block())
        with paddle.static.program_guard(legacy):
            for op in ops:
                if op.name() in STRUCTURAL:
                    writer.structural(op)
                else:
                    writer.apply(op, RULES[op.name()])
        fetches = [legacy.global_block().var(name) for _, name in sorted(writer.fetches)]
        paddle.static.save_inference_model(str(out_stem), writer.feeds, fetches, exe, program=legacy)
        kinds = sorted({op.type for op in legacy.global_block().ops})
    return {"pir_ops": len(ops), "legacy_op_types": kinds, "inputs": [v.name for v in writer.feeds],
            "outputs": len(fetches)}
