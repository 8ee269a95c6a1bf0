"""``FusedTensorRange``: an identity layer that carries an 8-bit grid for a tensor the platform fuses away.

A platform's fusing rules say which tensors the device never stores (a conv output feeding its activation,
say), so kerasq does not quantize them. Another runtime may have to store them: TFLite keeps a conv output
before a swish or an add. The grid such a runtime should use is searched at quantization time on the
tensor's calibration statistics and carried here; the Keras model's own computation does not change.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasq.quantizers.grid import QuantParams
from kerasq.quantizers.variables import layer_variable


@keras.saving.register_keras_serializable(package="kerasq")
class FusedTensorRange(keras.layers.Layer):
    """Identity; ``grid_range()`` is the 8-bit range a runtime that materializes this tensor should use.

    Args:
        producer_kind / consumer_kind: op kinds on either side of the fused tensor (exporters decide from
            them whether their runtime fuses the pair too).
    """

    def __init__(self, producer_kind: str = "", consumer_kind: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.producer_kind, self.consumer_kind = str(producer_kind), str(consumer_kind)
        self.minimum = layer_variable(self, "minimum", (), 0.0)
        self.maximum = layer_variable(self, "maximum", (), 1.0)

    @classmethod
    def from_params(
        cls, params: QuantParams, producer_kind: str, consumer_kind: str, name: str
    ) -> FusedTensorRange:
        layer = cls(producer_kind, consumer_kind, name=name)
        layer.minimum.assign(np.float32(params.range_min))
        layer.maximum.assign(np.float32(params.range_max))
        return layer

    def grid_range(self) -> tuple[float, float]:
        return float(self.minimum.numpy()), float(self.maximum.numpy())

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(producer_kind=self.producer_kind, consumer_kind=self.consumer_kind)
        return config
