"""The device profile schema: what a device family gets (formats, precision, threads, providers)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Quantization schemes a profile can ask for. Weights are always signed 8-bit per output channel;
# activations are unsigned on x86 (onnxruntime only fuses u8 activations into integer kernels there,
# see ../shared/notes/onnx-int8-baseline.md) and signed for TensorRT (which wants symmetric int8).
QuantScheme = Literal["qdq-u8a-s8w", "qdq-s8a-s8w"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArtifactChoice(Strict):
    format: Literal["onnx", "paddle_lite", "openvino"]
    precision: Literal["fp32", "fp16", "bf16", "int8"]
    quantization: QuantScheme | None = None
    # Where the conversion host can time the target (x86 profiles), only the fastest candidate that meets the
    # budget ships, plus every candidate marked `fallback` that passed: what a device runs when the chosen
    # one's runtime is missing (ONNX FP32 for a device without OpenVINO). Elsewhere everything that passes ships.
    fallback: bool = False

    @model_validator(mode="after")
    def _scheme_iff_int8(self) -> "ArtifactChoice":
        if self.precision == "int8" and self.quantization is None:
            raise ValueError("an int8 artifact needs a 'quantization' scheme (qdq-u8a-s8w or qdq-s8a-s8w)")
        if self.precision != "int8" and self.quantization is not None:
            raise ValueError(f"'quantization' only applies to int8 artifacts, not {self.precision}")
        return self

    def label(self) -> str:
        return f"{self.format} {self.precision}" + (f" ({self.quantization})" if self.quantization else "")


class OnnxSettings(Strict):
    opset: int = Field(13, ge=11, le=21)


class RuntimeSettings(Strict):
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)
    provider_options: list[dict[str, Any]] = Field(default_factory=list)
    openvino: dict[str, Any] = Field(default_factory=dict)    # OpenVINO properties (PERFORMANCE_HINT, NUM_STREAMS)

    @model_validator(mode="after")
    def _options_match_providers(self) -> "RuntimeSettings":
        if self.provider_options and len(self.provider_options) != len(self.providers):
            raise ValueError("provider_options must have one entry per provider")
        return self


class PaddleLiteSettings(Strict):
    valid_targets: list[Literal["arm", "x86", "opencl"]] = Field(default_factory=lambda: ["arm"])


# cpuinfo feature flags that mean the CPU does FP16 arithmetic (Cortex-A76 and later; not the A72)
FP16_FEATURES = {"fphp", "asimdhp"}


class Profile(Strict):
    name: str
    description: str
    family: Literal["x86", "arm", "jetson"]
    arch: Literal["x86_64", "aarch64"]
    accelerator: Literal["cpu", "cuda"] = "cpu"
    cpu: str | None = Field(None, description="CPU model (e.g. cortex-a72): what the emulator imitates")
    cpu_features: list[str] = Field(default_factory=list)
    members: list[str] = Field(default_factory=list,
                               description="a family profile: the device profiles whose devices all run its artifacts")
    threads: int = Field(0, ge=0, description="intra-op threads on the device; 0 = all cores")
    artifacts: list[ArtifactChoice] = Field(min_length=1, description="in order of preference")
    onnx: OnnxSettings = Field(default_factory=OnnxSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    paddle_lite: PaddleLiteSettings | None = None

    @model_validator(mode="after")
    def _fp32_fallback_present(self) -> "Profile":
        # Every quantized or half-precision artifact is judged against an FP32 twin and may be refused;
        # the profile must say which FP32 artifact is shipped then.
        if not any(a.precision == "fp32" for a in self.artifacts):
            raise ValueError("artifacts must include an fp32 entry (the fallback when int8/fp16 misses its budget)")
        return self

    @model_validator(mode="after")
    def _paddle_lite_fits(self) -> "Profile":
        lite = [a for a in self.artifacts if a.format == "paddle_lite"]
        if lite and self.paddle_lite is None:
            raise ValueError("paddle_lite artifacts need a 'paddle_lite' section (valid_targets)")
        if any(a.precision == "fp16" for a in lite) and not FP16_FEATURES & set(self.cpu_features):
            raise ValueError("a paddle_lite fp16 artifact needs a CPU with FP16 arithmetic (cpu_features "
                             "fphp/asimdhp, e.g. Cortex-A76); this profile's CPU has none")
        if any(a.precision == "int8" and a.quantization != "qdq-s8a-s8w" for a in lite):
            raise ValueError("paddle_lite int8 is symmetric int8 (Paddle's post-training quantization): "
                             "quantization must be qdq-s8a-s8w")
        return self
