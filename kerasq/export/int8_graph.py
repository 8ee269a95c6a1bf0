"""The TensorFlow graph the TFLite converter turns into an integer model.

Each ``ActivationQuantizer`` becomes ``tf.quantization.fake_quant_with_min_max_vars`` with the exact range of
its grid, and each ``QuantizeWrapper`` computes its op on its already-quantized kernel passed through
``fake_quant_with_min_max_vars_per_channel`` at the int8 range of the same scale (exact, and kernels of
fewer than 8 bits keep their grid inside the int8 tensor). With ``Optimize.DEFAULT`` and no representative dataset, the
converter reads those ranges and produces int8 tensors with exactly kerasq's scales and zero points.
Ranges sit on their grids and include zero, so TensorFlow's range nudging changes nothing.

Layouts follow what the converter accepts: per-channel fake quant acts on the last kernel axis, and a
per-channel quantized constant may be reshaped but not transposed. Dense layers therefore run as 1x1
convolutions (the converter rejects per-channel FULLY_CONNECTED), depthwise kernels are quantized as
[kh, kw, 1, in * multiplier] then reshaped.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasq.quantizers import ActivationQuantizer, QuantizeWrapper
from kerasq.quantizers.kernel_ops import LINEAR_OPS


class ExportError(ValueError):
    """The model cannot be exported in the requested format; the message says why and what to do."""


def activation_range(q: ActivationQuantizer) -> tuple[float, float]:
    scale, zero_point = q.grid()
    return (q.qmin - zero_point) * scale, (q.qmax - zero_point) * scale


class TFFakeQuantActivation(keras.layers.Layer):
    """Export-only twin of ``ActivationQuantizer`` using TensorFlow's fake-quant op."""

    def __init__(self, source: ActivationQuantizer, **kwargs: Any) -> None:
        # Short names: they end up in every tensor name of the flatbuffer.
        super().__init__(name=source.name.replace("_activation_quantizer", "_aq"), **kwargs)
        self.range = activation_range(source)

        self.n_bits = (
            source.n_bits
        )  # 8, or 16 for int16x8 (the range then has exactly 65535 steps of the scale)

    def call(self, x: Any) -> Any:
        return tf.quantization.fake_quant_with_min_max_vars(
            x, self.range[0], self.range[1], num_bits=self.n_bits
        )


def activation_width(q_model: keras.Model) -> int:
    """8 (int8 scheme) or 16 (int16x8 scheme: every activation 16-bit, signed, zero point 0); anything else is
    refused, naming the quantizers that do not fit."""
    quantizers = [layer for layer in q_model.layers if isinstance(layer, ActivationQuantizer)]
    widths = {q.n_bits for q in quantizers}
    if widths <= {8}:
        return 8
    if widths == {16}:
        off = [q.name for q in quantizers if q.grid()[1] != 0 or q.qmin != -32768 or q.qmax != 32767]
        if off:
            raise ExportError(
                "TFLite's int16x8 scheme needs signed symmetric 16-bit activations (zero point 0, range "
                f"[-32768, 32767]); not so: {', '.join(off)}. Use a platform with signed symmetric 16-bit "
                "activations, or export FAKELY_QUANT."
            )
        return 16
    others = [f"{q.name} ({q.n_bits}-bit)" for q in quantizers if q.n_bits != 8]
    raise ExportError(
        "TFLite integer export needs one activation width everywhere: 8 bits (int8), or 16 bits (int16x8). "
        f"Activation quantizers with other widths: {', '.join(others)}. Re-quantize them, or export "
        "FAKELY_QUANT (float TFLite graph)."
    )


def _per_channel(kernel: tf.Tensor, scale: np.ndarray, bits: int = 8) -> tf.Tensor:
    """Fake-quantize ``kernel`` on its last axis on the symmetric narrow ``bits``-bit grid of ``scale``."""
    scale = scale.reshape(-1).astype(np.float32)
    top = float(2 ** (bits - 1) - 1)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -top * scale, top * scale, num_bits=bits, narrow_range=True
    )


def _per_tensor(kernel: tf.Tensor, scale: float, bits: int = 8) -> tf.Tensor:
    top = float(2 ** (bits - 1) - 1)
    return tf.quantization.fake_quant_with_min_max_vars(kernel, -top * scale, top * scale, num_bits=bits,
                                                        narrow_range=True)  # fmt: skip


INT4_KINDS = ("conv", "dense", "depthwise_conv")  # the converter rejects int4 transposed-convolution kernels


def int4_kernel(kind: str, spec: dict) -> bool:
    """A kernel LiteRT can hold as int4: a conv / dense / depthwise kernel on a symmetric narrow grid of at most
    4 bits (|q| <= 7)."""
    return kind in INT4_KINDS and spec["n_bits"] <= 4 and spec["qmin"] >= -7 and spec["qmax"] <= 7


class TFQuantizedWeighted(keras.layers.Layer):
    """Export-only twin of ``QuantizeWrapper``: the same op on a TensorFlow fake-quantized kernel."""

    def __init__(self, source: QuantizeWrapper, int4_weights: bool = False, **kwargs: Any) -> None:
        super().__init__(name=source.layer.name, **kwargs)
        self.source = source
        # storage width per kernel: int4 where asked and the grid fits, else int8
        self._bits = {
            name: 4 if int4_weights and int4_kernel(source.kind, spec) else 8
            for name, spec in source.kernel_quantizers.items()
        }
        self.layer = source.layer
        for name, spec in source.kernel_quantizers.items():
            scale, zero_point = source.kernel_grid(name)
            if spec["n_bits"] > 8 or spec["qmin"] < -127 or np.any(zero_point != 0):
                raise ExportError(
                    f"Layer {source.layer.name!r}: kernel {name!r} is not on a symmetric int8 grid "
                    f"({spec['n_bits']} bits, qmin {spec['qmin']}); INT8 TFLite export needs symmetric weights "
                    "of at most 8 bits with narrow range (the 'tflite' platform does this)."
                )
        self._scales = {name: source.kernel_grid(name)[0] for name in source.kernel_quantizers}
        # Kernels already on their (possibly < 8-bit) grids; the int8 fake quant below is then exact.
        self._kernels = {name: np.asarray(k) for name, k in source.quantized_kernels().items()}
        if getattr(self.layer, "data_format", "channels_last") != "channels_last":
            raise ExportError(
                f"Layer {self.layer.name!r} uses channels_first, which TFLite does not support."
            )

    def _scale(self, name: str) -> np.ndarray:
        return self._scales[name]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def _kernel(self, name: str) -> tf.Tensor:
        """Kernel fake-quantized along its own channel axes (last axis, or per tensor)."""
        kernel = tf.constant(self._kernels[name])
        axes = self.source.kernel_quantizers[name]["axes"]
        scale = self._scale(name)
        if not axes:
            return _per_tensor(kernel, float(scale.reshape(-1)[0]), self._bits[name])
        if list(axes) == [kernel.shape.rank - 1]:
            return _per_channel(kernel, scale, self._bits[name])
        raise ExportError(
            f"Layer {self.layer.name!r}: per-channel kernel {name!r} along axes {axes} cannot be expressed "
            "for the TFLite converter; use per-tensor weights for this layer (the 'tflite' platform does)."
        )

    def call(self, x: Any) -> Any:
        kind, layer = self.source.kind, self.layer
        if kind in ("conv", "depthwise_conv") and len(layer.kernel.shape) == 3:
            y = self._conv1d(x)
        elif kind == "dense":
            y = self._dense(x)
        elif kind == "depthwise_conv":
            y = self._depthwise(x)
        elif kind in ("conv", "conv_transpose"):
            y = LINEAR_OPS[kind](layer, x, {"kernel": self._kernel("kernel")})
        else:
            raise ExportError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no INT8 TFLite lowering; kerasq splits "
                "separable convolutions into depthwise + pointwise when quantizing for the 'tflite' platform."
            )
        if layer.bias is not None:
            y = y + layer.bias
        return layer.activation(y) if layer.activation is not None else y

    def _dense(self, x: Any) -> Any:
        kernel = tf.constant(self._kernels["kernel"])
        axes = self.source.kernel_quantizers["kernel"]["axes"]
        if not axes:
            return tf.matmul(
                x, _per_tensor(kernel, float(self._scale("kernel").reshape(-1)[0]), self._bits["kernel"])
            )
        units_in, units_out = kernel.shape
        qkernel = _per_channel(
            tf.reshape(kernel, [1, 1, units_in, units_out]), self._scale("kernel"), self._bits["kernel"]
        )
        y = tf.nn.conv2d(tf.reshape(x, [-1, 1, 1, units_in]), qkernel, 1, "VALID")
        inner = x.shape[1:-1]
        if all(d is not None for d in inner):  # static shape: a plain RESHAPE, no shape arithmetic ops
            return tf.reshape(y, [-1, *inner, units_out])
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [units_out]], 0))

    def _conv1d(self, x: Any) -> Any:
        """1-D convolutions as 2-D ones on [batch, 1, steps, channels], kernel expanded before quantizing."""
        layer = self.layer
        padding = layer.padding
        if padding == "causal":
            x = tf.pad(x, [[0, 0], [layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0], [0, 0]])
            padding = "valid"
        kernel = tf.constant(self._kernels["kernel"])
        steps, channels_in, last = kernel.shape
        x4 = tf.expand_dims(x, 1)
        strides, dilations = (1, layer.strides[0]), (1, layer.dilation_rate[0])
        per_channel = bool(self.source.kernel_quantizers["kernel"]["axes"])
        scale = self._scale("kernel")
        if self.source.kind == "conv":
            k4 = tf.reshape(kernel, [1, steps, channels_in, last])
            bits = self._bits["kernel"]
            k4 = (
                _per_channel(k4, scale, bits)
                if per_channel
                else _per_tensor(k4, float(scale.reshape(-1)[0]), bits)
            )
            y = tf.nn.conv2d(x4, k4, strides, padding.upper(), dilations=dilations)
        else:
            flat = tf.reshape(kernel, [1, steps, 1, channels_in * last])
            flat = (
                _per_channel(flat, scale, self._bits["kernel"])
                if per_channel
                else _per_tensor(flat, float(scale.reshape(-1)[0]), self._bits["kernel"])
            )
            k4 = tf.reshape(flat, [1, steps, channels_in, last])
            y = tf.nn.depthwise_conv2d(x4, k4, (1, *strides, 1), padding.upper(), dilations=dilations)
        return tf.squeeze(y, 1)

    def _depthwise(self, x: Any) -> Any:
        layer = self.layer
        kernel = tf.constant(self._kernels["kernel"])
        axes = self.source.kernel_quantizers["kernel"]["axes"]
        if axes:
            shape = kernel.shape
            flat = tf.reshape(kernel, [*shape[:-2], 1, shape[-2] * shape[-1]])
            kernel = tf.reshape(_per_channel(flat, self._scale("kernel"), self._bits["kernel"]), shape)
        else:
            kernel = _per_tensor(kernel, float(self._scale("kernel").reshape(-1)[0]), self._bits["kernel"])
        return LINEAR_OPS["depthwise_conv"](layer, x, {"kernel": kernel})


def export_graph(q_model: keras.Model, int4_weights: bool = False) -> keras.Model:
    """A Keras model computing ``q_model`` with TensorFlow fake-quant ops (for the TFLite converter only).
    ``int4_weights``: kernels on grids of at most 4 bits get 4-bit fake quant (the converter's int4 weights)."""

    def swap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, ActivationQuantizer):
            return TFFakeQuantActivation(layer)
        if isinstance(layer, QuantizeWrapper):
            return TFQuantizedWeighted(layer, int4_weights)
        return layer

    return keras.models.clone_model(q_model, clone_function=swap)
