"""``QuantizationInfo``: what was quantized, how, what stayed float and why, and the memory it takes.

Two weight figures: ``weights_memory_bytes`` counts the quantized kernels at their bit widths, as MCT's
``ResourceUtilization.weights_memory`` does (what mixed-precision budgets limit); ``stored_weights_bytes`` is
what the device holds: those kernels bit-packed, plus every bias (int32, including the zero biases bias
correction adds) and every weight left float (float32). A layer applied several times counts once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from kerasq.builder.model_builder import quantizer_name
from kerasq.config.resource_utilization import ResourceUtilization
from kerasq.graph.model_graph import Graph
from kerasq.mixed_precision.bit_allocation import MixedPrecisionReport
from kerasq.plan import QuantizationParams, QuantizationPlan
from kerasq.quantizers.grid import QuantParams
from kerasq.resources.utilization import layer_kernel_bytes, stored_layer_bytes


def _values(array: np.ndarray) -> list[float]:
    return np.asarray(array, np.float64).reshape(-1).tolist()


@dataclass
class GPTQReport:
    """What fine-tuning did. Losses are relative to the PTQ solution's (rounding to nearest) on the first
    ``kerasq.gptq.training.CHECK_BATCHES`` batches."""

    epochs: int
    steps: int
    compare_points: int
    hessian_weights: bool
    loss: list[float] = field(default_factory=list)  # mean reconstruction loss per epoch
    regularizer: list[float] = field(default_factory=list)  # mean rounding regularizer per epoch (0 = hard)
    seconds: float = 0.0
    final_loss: float = 1.0  # with the learned rounding hardened, on the first batches (PTQ = 1.0)
    kept_ptq: bool = False  # the learned rounding was not better than PTQ's, so PTQ's was kept
    flipped: float = 0.0  # fraction of kernel values rounded away from nearest
    trained: dict[str, int] = field(default_factory=dict)  # variable group -> number of values trained

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(self.epochs, 1)

    def summary(self) -> str:
        losses = ", ".join(f"{v:.4f}" for v in self.loss)
        return (
            f"gradient-based rounding: {self.epochs} epochs ({self.steps} steps, {self.seconds:.1f} s), "
            f"{self.compare_points} compare points, loss per epoch [{losses}], hardened {self.final_loss:.4f} "
            "(PTQ = 1), "
            f"{100 * self.flipped:.1f}% of kernel values rounded away from nearest"
            + (" (not better than PTQ: PTQ's rounding kept)" if self.kept_ptq else "")
        )


@dataclass(frozen=True)
class GridInfo:
    """One quantization grid as reported to users (lists hold one value per channel)."""

    n_bits: int
    method: str
    signed: bool
    per_channel: bool
    scale: list[float]
    zero_point: list[int]
    range_min: list[float]
    range_max: list[float]
    threshold: list[float] | None

    @classmethod
    def from_params(cls, p: QuantParams) -> GridInfo:
        return cls(
            n_bits=p.n_bits, method=p.method.value, signed=p.signed, per_channel=p.channel_axis is not None,
            scale=_values(p.scale), zero_point=[int(z) for z in np.asarray(p.zero_point).reshape(-1)],
            range_min=_values(p.range_min), range_max=_values(p.range_max),
            threshold=None if p.threshold is None else _values(p.threshold),
        )  # fmt: skip


@dataclass
class LayerInfo:
    """One node (call of a layer). A layer applied several times reports its bytes at its first call only and
    names that call in ``weights_of`` at the others."""

    name: str
    kind: str | None
    layer_type: str
    weights: dict[str, GridInfo] = field(default_factory=dict)  # kernel name -> grid
    activation: GridInfo | None = None  # grid of the layer's output, if it has its own quantizer
    activation_quantizer: str | None = None
    kernel_bytes: float = 0.0  # quantized kernels at their bits (its share of weights_memory_bytes)
    stored_bytes: int = 0  # packed kernels + int32 bias + float weights (its share of stored_weights_bytes)
    weights_of: str | None = None  # the first call of the same layer, which holds its weights


@dataclass
class QuantizationInfo:
    """Report of one quantization run (returned next to the quantized model)."""

    platform: str
    layers: dict[str, LayerInfo]
    inputs: dict[str, GridInfo]
    float_layers: dict[str, str]  # layer name -> reason it stays float
    weights_memory_bytes: float  # quantized kernels at their bits: MCT's weights_memory
    float_weights_memory_bytes: int  # every weight of the float model at 4 bytes
    stored_weights_bytes: int = 0  # on the device: packed kernels + int32 biases + weights left float
    resource_utilization: ResourceUtilization | None = None  # of the quantized model, at its bit widths
    mixed_precision: MixedPrecisionReport | None = None  # set when mixed precision chose the widths
    warnings: list[str] = field(default_factory=list)  # findings to act on (bad data, unbalanced concats)
    gptq: GPTQReport | None = None  # set when gradient-based fine-tuning ran

    @property
    def compression_ratio(self) -> float:
        """Float weight bytes over the stored bytes (what the device saves)."""
        return self.float_weights_memory_bytes / max(self.stored_weights_bytes, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"kerasq quantization ({self.platform}): quantized kernels {self.weights_memory_bytes:,.0f} B; "
            f"stored weights {self.stored_weights_bytes:,} B with biases and float weights "
            f"(float {self.float_weights_memory_bytes:,} B, x{self.compression_ratio:.2f})",
            f"{'layer':40s} {'kind':16s} {'weight bits':>12s} {'act bits':>9s}",
        ]
        for layer in self.layers.values():
            wbits = "/".join(str(g.n_bits) for g in layer.weights.values()) or "-"
            abits = str(layer.activation.n_bits) if layer.activation else "-"
            lines.append(f"{layer.name:40s} {layer.kind or '?':16s} {wbits:>12s} {abits:>9s}")
        for name, reason in self.float_layers.items():
            lines.append(f"float: {name}: {reason}")
        if self.resource_utilization is not None:
            lines.append(f"resources: {self.resource_utilization}")
        if self.mixed_precision is not None:
            lines.append(self.mixed_precision.summary())
        if self.gptq is not None:
            lines.append(self.gptq.summary())
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def build_info(
    graph: Graph,
    plan: QuantizationPlan,
    params: QuantizationParams,
    platform: str,
    float_weights_bytes: int,
    resources: ResourceUtilization | None = None,
    mixed_precision: MixedPrecisionReport | None = None,
    warnings: list[str] | None = None,
) -> QuantizationInfo:
    """Assemble the report from the graph, the plan and the chosen grids."""
    layers: dict[str, LayerInfo] = {}
    first_call = {call: first for first, calls in graph.layer_calls().items() for call in calls}
    for node in graph.nodes:
        info = LayerInfo(name=node.name, kind=node.kind, layer_type=type(node.op).__name__)
        kernels = params.weights.get(node.name, {})
        info.weights = {name: GridInfo.from_params(p) for name, p in kernels.items()}
        if first_call[node.name] == node.name:
            bits = {name: p.n_bits for name, p in kernels.items()}
            info.kernel_bytes = layer_kernel_bytes(node, bits)
            info.stored_bytes = stored_layer_bytes(node, bits)
        else:
            info.weights_of = first_call[node.name]
        produced = [t for t in node.outputs if t in params.activations]
        if produced:
            info.activation = GridInfo.from_params(params.activations[produced[0]])
            info.activation_quantizer = quantizer_name(
                node.name, node.outputs.index(produced[0]), len(node.outputs)
            )
        layers[node.name] = info
    inputs = {
        name: GridInfo.from_params(params.activations[t])
        for t, name in zip(graph.inputs, graph.input_names, strict=True)
        if t in params.activations
    }
    return QuantizationInfo(
        platform=platform, layers=layers, inputs=inputs, float_layers=dict(plan.float_nodes),
        weights_memory_bytes=math.fsum(layer.kernel_bytes for layer in layers.values()),
        float_weights_memory_bytes=float_weights_bytes,
        stored_weights_bytes=sum(layer.stored_bytes for layer in layers.values()),
        resource_utilization=resources, mixed_precision=mixed_precision, warnings=list(warnings or []),
    )  # fmt: skip
