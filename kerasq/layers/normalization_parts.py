"""The steps of a layer normalization as layers of their own, so each intermediate tensor gets a grid.

``graph.rewrites.layer_norm_split`` writes ``LayerNormalization`` as mean, subtract, square, mean, inverse
square root, multiply and a per-channel affine. Keras has layers for the subtract and the multiplies; these two
cover the rest. Both are plain ``keras.ops`` calls, which TFLite runs as int8 MEAN and RSQRT.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="kerasq")
class ChannelMean(keras.layers.Layer):
    """The mean over the last (channel) axis, kept as an axis of size 1."""

    def call(self, x: Any) -> Any:
        return keras.ops.mean(x, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], 1)


@keras.saving.register_keras_serializable(package="kerasq")
class InverseSqrt(keras.layers.Layer):
    """``1 / sqrt(x + epsilon)`` (the variance term of a normalization)."""

    def __init__(self, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x: Any) -> Any:
        return keras.ops.rsqrt(x + self.epsilon)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}
