"""Where the weights of each weighted kind live and which axes hold their output channels."""

from __future__ import annotations

import numpy as np

from kerasq.errors import ModelError
from kerasq.graph.model_graph import Node

# Weight names in the order ``layer.get_weights()`` returns them (bias last, only with use_bias).
_WEIGHT_NAMES = {
    "conv": ("kernel",),
    "dense": ("kernel",),
    "depthwise_conv": ("kernel",),
    "conv_transpose": ("kernel",),
    "separable_conv": ("depthwise_kernel", "pointwise_kernel"),
}

# Kernels kerasq quantizes, with their channel axes (negative, counted from the end of the kernel shape).
# Depthwise kernels [..., in, multiplier] keep one scale per (in, multiplier) output channel.
QUANTIZED_KERNELS: dict[str, dict[str, tuple[int, ...]]] = {
    "conv": {"kernel": (-1,)},
    "dense": {"kernel": (-1,)},
    "depthwise_conv": {"kernel": (-2, -1)},
    "conv_transpose": {"kernel": (-2,)},
    "separable_conv": {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)},
}

# The kernel whose channel axes map to the layer's output channels (what batch-norm folding scales).
OUTPUT_KERNEL = {
    "conv": "kernel",
    "dense": "kernel",
    "depthwise_conv": "kernel",
    "conv_transpose": "kernel",
    "separable_conv": "pointwise_kernel",
}


def weight_names(kind: str, use_bias: bool) -> tuple[str, ...]:
    return _WEIGHT_NAMES[kind] + (("bias",) if use_bias else ())


def declared_weight_names(node: Node) -> tuple[str, ...]:
    """The weights ``node``'s kind declares (its kernels, and ``bias`` with ``use_bias``), in layer order."""
    return weight_names(node.kind, bool(node.layer_config.get("use_bias", False)))


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
