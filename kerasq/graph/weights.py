"""Where the weights of each weighted kind live and which axes hold their output channels."""

from __future__ import annotations

import numpy as np

from kerasq.errors import ModelError
from kerasq.graph.model_graph import Node
from kerasq.quantizers.weighted_kinds import WEIGHTED

# Read from the ``WeightedKind`` records: weight names in ``layer.get_weights()`` order (bias last, only with
# use_bias); the kernels kerasq quantizes with their channel axes (negative, from the end of the kernel shape;
# depthwise kernels [..., in, multiplier] keep one scale per (in, multiplier) output channel); the kernel whose
# channel axes are the layer's output channels (what batch-norm folding scales).
_WEIGHT_NAMES = {name: tuple(kind.kernels) for name, kind in WEIGHTED.items()}
QUANTIZED_KERNELS: dict[str, dict[str, tuple[int, ...]]] = {
    name: dict(k.kernels) for name, k in WEIGHTED.items()
}
OUTPUT_KERNEL = {name: kind.output_kernel for name, kind in WEIGHTED.items()}


def weight_names(kind: str, use_bias: bool) -> tuple[str, ...]:
    return _WEIGHT_NAMES[kind] + (("bias",) if use_bias else ())


def declared_weight_names(node: Node) -> tuple[str, ...]:
    """The weights ``node``'s kind declares (its kernels, and ``bias`` with ``use_bias``), in layer order."""
    return weight_names(node.known_kind, bool(node.layer_config.get("use_bias", False)))


def has_plain_weights(node: Node) -> bool:
    """Whether ``node`` holds exactly the weights its kind declares: no extra ones such as LoRA factors or
    Keras-native quantization scales, which rewrites and corrections would not carry over."""
    return len(node.layer_weights) == len(declared_weight_names(node))


def named_weights(node: Node) -> dict[str, np.ndarray]:
    """The node's weights by name (kernel/bias/...), after any rewrite."""
    names = declared_weight_names(node)
    values = node.layer_weights
    if len(values) != len(names):
        raise ModelError(
            f"Layer {node.name!r} ({type(node.op).__name__}) has {len(values)} weights; expected {names}. "
            "Layers with extra weights (e.g. LoRA or Keras-native quantization) are not supported."
        )
    return dict(zip(names, values, strict=True))


def channel_axes(kernel: np.ndarray, axes: tuple[int, ...]) -> tuple[int, ...]:
    """Negative channel axes -> non-negative axes of ``kernel``."""
    return tuple(a % kernel.ndim for a in axes)
