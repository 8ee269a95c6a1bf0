"""Every weighted layer kind kerasq quantizes, one ``WeightedKind`` record each.

A record says which Keras classes are read as the kind, where its kernels live and which axes hold their
channels, how it runs with substitute kernels, and which rewrites, corrections and export paths accept it.
Every other module reads these records, so a new weighted layer is one entry here (plus its tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import keras
from keras import ops

Forward = Callable[
    [keras.layers.Layer, Any, dict[str, Any]], Any
]  # (layer, input, kernels) -> output, no bias


def _conv(layer: keras.layers.Layer, x: Any, k: dict[str, Any]) -> Any:
    padding = layer.padding
    if padding == "causal":
        x = ops.pad(x, [[0, 0], [layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0], [0, 0]])
        padding = "valid"
    return ops.conv(
        x, k["kernel"], strides=list(layer.strides), padding=padding,
        dilation_rate=layer.dilation_rate, data_format=layer.data_format,
    )  # fmt: skip


def _depthwise(layer: keras.layers.Layer, x: Any, k: dict[str, Any]) -> Any:
    return ops.depthwise_conv(
        x, k["kernel"], strides=layer.strides, padding=layer.padding,
        dilation_rate=layer.dilation_rate, data_format=layer.data_format,
    )  # fmt: skip


def _separable(layer: keras.layers.Layer, x: Any, k: dict[str, Any]) -> Any:
    return ops.separable_conv(
        x, k["depthwise_kernel"], k["pointwise_kernel"], strides=layer.strides, padding=layer.padding,
        dilation_rate=layer.dilation_rate, data_format=layer.data_format,
    )  # fmt: skip


def _conv_transpose(layer: keras.layers.Layer, x: Any, k: dict[str, Any]) -> Any:
    return ops.conv_transpose(
        x, k["kernel"], strides=list(layer.strides), padding=layer.padding, output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate, data_format=layer.data_format,
    )  # fmt: skip


def _dense(layer: keras.layers.Layer, x: Any, k: dict[str, Any]) -> Any:
    return ops.matmul(x, k["kernel"])


@dataclass(frozen=True)
class WeightedKind:
    """One weighted layer kind.

    Attributes:
        name: the kind platforms and plans name it by.
        layer_classes: Keras layer classes read as this kind.
        kernels: kernel weight name -> its channel axes (negative, from the end of the kernel shape), in
            ``layer.get_weights()`` order; a bias follows them when the layer has ``use_bias``.
        output_kernel: the kernel whose channel axes are the layer's output channels (what BN folding scales).
        forward: the layer's computation with substitute kernels (no bias, no activation).
        depthwise: kernels are ``[..., in, multiplier]``: output channels are (in, multiplier) pairs.
        macs_per_input_position: one kernel pass per input position (a transposed convolution), not per output.
        per_channel_on_tflite: the TFLite converter keeps one kernel scale per output channel.
        bias_correction, compensated_rounding: those corrections adjust the kind.
        relu_bound_scaling: a bounded ReLU's scale can move into and out of it (``relu_bound_to_power_of_2``).
        shift_negative_folding: shift-negative correction can fold an input shift into its bias.
        residual_folding: ``x + layer(x)`` can be written into its kernel (``residual_collapsing``).
        int4_storage: LiteRT can hold its kernel as int4.
        export_twin: the INT8 export writes it with kerasq's own twin layer (the others are rewritten first).
    """

    name: str
    layer_classes: tuple[str, ...]
    kernels: Mapping[str, tuple[int, ...]]
    output_kernel: str
    forward: Forward
    depthwise: bool = False
    macs_per_input_position: bool = False
    per_channel_on_tflite: bool = True
    bias_correction: bool = False
    compensated_rounding: bool = False
    relu_bound_scaling: bool = False
    shift_negative_folding: bool = False
    residual_folding: bool = False
    int4_storage: bool = False
    export_twin: bool = False


_LINEAR_READER = dict(  # what kerasq can do with a conv, depthwise or dense layer
    bias_correction=True, compensated_rounding=True, relu_bound_scaling=True, shift_negative_folding=True,
    int4_storage=True, export_twin=True,
)  # fmt: skip

WEIGHTED: dict[str, WeightedKind] = {
    kind.name: kind
    for kind in (
        WeightedKind(
            name="conv",
            layer_classes=("Conv1D", "Conv2D", "Conv3D"),
            kernels={"kernel": (-1,)},
            output_kernel="kernel",
            forward=_conv,
            residual_folding=True,
            **_LINEAR_READER,
        ),
        WeightedKind(
            name="depthwise_conv",
            layer_classes=("DepthwiseConv1D", "DepthwiseConv2D"),
            kernels={"kernel": (-2, -1)},
            output_kernel="kernel",
            forward=_depthwise,
            depthwise=True,
            residual_folding=True,
            **_LINEAR_READER,
        ),
        WeightedKind(
            name="separable_conv",
            layer_classes=("SeparableConv1D", "SeparableConv2D"),
            kernels={"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)},
            output_kernel="pointwise_kernel",
            forward=_separable,
        ),
        WeightedKind(
            name="conv_transpose",
            layer_classes=("Conv1DTranspose", "Conv2DTranspose"),
            kernels={"kernel": (-2,)},
            output_kernel="kernel",
            forward=_conv_transpose,
            macs_per_input_position=True,
            per_channel_on_tflite=False,
            export_twin=True,
        ),
        WeightedKind(
            name="dense",
            layer_classes=("Dense",),
            kernels={"kernel": (-1,)},
            output_kernel="kernel",
            forward=_dense,
            **_LINEAR_READER,
        ),
    )  # fmt: skip
}

_FLAGS = {f.name for f in fields(WeightedKind) if f.type == "bool"}


def kinds_with(flag: str) -> tuple[str, ...]:
    """The weighted kinds whose ``flag`` (a boolean field of ``WeightedKind``) is set, in registry order."""
    if flag not in _FLAGS:
        raise ValueError(f"WeightedKind has no flag {flag!r}; flags: {sorted(_FLAGS)}")
    return tuple(name for name, kind in WEIGHTED.items() if getattr(kind, flag))
