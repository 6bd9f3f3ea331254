"""How one runtime wants a calibrated QDQ graph laid out, and the onnxruntime call that writes it.

The quantize pass searches the same way for every runtime (range candidates, channel groups, float
fallback); what differs is a layout: the exact float rewrite made before calibration, the types and
options given to onnxruntime's quantize_static, which nodes and inputs get Q/DQ, and a fix-up of the
placement afterwards. The CPU layouts live in quantize.py, TensorRT's in tensorrt_form.py.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runtimes.errors import ConversionError

Plan = dict[str, tuple[int, ...]]     # node name -> the input slots that take an int8 activation


@dataclass(frozen=True)
class QuantLayout:
    name: str
    activation: str                                  # onnxruntime QuantType names
    weight: str
    extra_options: dict[str, Any]
    prepare: Callable[..., dict[str, Any]]           # (src, dst, seeds, peaks) -> counts: exact float rewrite
    plan: Callable[[Path, list[str]], Plan] | None = None    # None: every op onnxruntime quantizes
    finish: Callable[[Path, Plan], int] | None = None        # placement fix on the quantized file
    fallback_ops: frozenset[str] = field(default_factory=frozenset)   # empty: any node may be kept in float
    judge: Callable[[Path, int], Any] | None = None    # (file, threads) -> what the family runs; None: the file


def quantize_with(layout: QuantLayout, src: Path, dst: Path, cache: Path, exclude: list[str]) -> Path:
    """onnxruntime's quantize_static (QDQ, per-channel weights) with the layout's settings and ranges
    read from `cache`; the nodes in `exclude` stay float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    plan = layout.plan(src, exclude) if layout.plan else None
    if plan is not None and not plan:     # onnxruntime reads an empty list as "quantize every node"
        raise ConversionError(f"quantize: {src.name} has no node the {layout.name} layout quantizes")
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "run pre-processing" nags
    try:
        quantize_static(str(src), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=getattr(QuantType, layout.activation),
                        weight_type=getattr(QuantType, layout.weight), nodes_to_exclude=list(exclude),
                        nodes_to_quantize=list(plan) if plan is not None else None,
                        calibration_cache_path=str(cache), extra_options=dict(layout.extra_options))
    except Exception as err:  # onnxruntime.quantization raises assorted exceptions
        raise ConversionError(f"quantize: onnxruntime could not quantize {src.name}: {str(err).splitlines()[0]}") \
            from None
    if layout.finish is not None and plan is not None:
        layout.finish(dst, plan)
    return dst
