"""Forward passes of weighted layers with substitute kernels (the wrapped layer's variables stay as they are).

Each function mirrors the Keras layer's own ``call`` but takes the kernels as arguments, so a wrapper can
feed fake-quantized kernels through the exact same computation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops


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


LINEAR_OPS: dict[str, Callable[[keras.layers.Layer, Any, dict[str, Any]], Any]] = {
    "conv": _conv,
    "depthwise_conv": _depthwise,
    "separable_conv": _separable,
    "conv_transpose": _conv_transpose,
    "dense": _dense,
}


def weighted_forward(
    kind: str, layer: keras.layers.Layer, x: Any, kernels: dict[str, Any], bias: Any = None
) -> Any:
    """``layer``'s output computed with ``kernels`` (and ``bias``, if given) in place of its own."""
    y = LINEAR_OPS[kind](layer, x, kernels)
    bias = getattr(layer, "bias", None) if bias is None else bias
    if bias is not None:
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))
        y = ops.add(y, bias)
    if layer.activation is not None:
        y = layer.activation(y)
    return y
