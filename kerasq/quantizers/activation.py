"""The activation quantizer layer: holds a grid, calls ``fake_quant``."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasq.errors import ConfigError
from kerasq.quantizers.fake_quant import fake_quant, grid_scale
from kerasq.quantizers.grid import HALF_TO_EVEN, ROUNDINGS, QuantParams
from kerasq.quantizers.variables import layer_variable


@keras.saving.register_keras_serializable(package="kerasq")
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor on a per-tensor grid (scale and zero point are saved with the model)."""

    def __init__(
        self, n_bits: int = 8, qmin: int = -128, qmax: int = 127, method: str = "power_of_two",
        signed: bool = True, sample_shape: tuple[int, ...] | None = None, reference_count: int = 0,
        rounding: str = HALF_TO_EVEN,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        if rounding not in ROUNDINGS:
            raise ConfigError(f"ActivationQuantizer rounding must be one of {ROUNDINGS}, got {rounding!r}.")
        self.rounding = rounding  # where ties go (kerasq.quantizers.fake_quant)
        self.n_bits, self.qmin, self.qmax = int(n_bits), int(qmin), int(qmax)
        self.method, self.signed = str(method), bool(signed)
        # On a model input with unknown dimensions: one calibration sample's shape (no batch axis), so an
        # exporter can run the file once at a shape the model was calibrated on.
        self.sample_shape = None if sample_shape is None else tuple(int(d) for d in sample_shape)
        # On a model input: ``reference_count`` calibration samples of ``sample_shape`` (raw input values),
        # so an exporter can check its file against this model on data the model was calibrated on.
        self.reference_count = int(reference_count)
        if self.reference_count and self.sample_shape is None:
            raise ConfigError(f"{self.name}: reference_count needs sample_shape (the shape of one sample).")
        sample_shape = self.sample_shape or ()  # set whenever reference_count is (checked above)
        self.reference_inputs = (
            self.add_weight(
                name="reference_inputs",
                shape=(self.reference_count, *sample_shape),
                initializer="zeros",
                trainable=False,
            )  # fmt: skip
            if self.reference_count
            else None
        )
        self.scale = layer_variable(self, "scale", (), 1.0)
        self.zero_point = layer_variable(self, "zero_point", (), 0.0)

    @classmethod
    def from_params(
        cls, params: QuantParams, name: str, reference_inputs: np.ndarray | None = None
    ) -> ActivationQuantizer:
        """A quantizer on ``params``' grid; ``reference_inputs`` (n samples of a model input) are kept with it."""
        layer = cls(
            n_bits=params.n_bits, qmin=params.qmin, qmax=params.qmax, method=params.method.value,
            signed=params.signed, name=name, rounding=params.rounding,
            sample_shape=None if reference_inputs is None else reference_inputs.shape[1:],
            reference_count=0 if reference_inputs is None else len(reference_inputs),
        )  # fmt: skip
        layer.set_params(params)
        if reference_inputs is not None:
            if layer.reference_inputs is None:
                raise ConfigError(
                    f"{name}: reference_inputs holds no samples; pass None or at least one sample."
                )
            layer.reference_inputs.assign(np.asarray(reference_inputs, np.float32))
        return layer

    def set_params(self, params: QuantParams) -> None:
        self.scale.assign(np.asarray(params.scale, np.float32).reshape(()))
        self.zero_point.assign(np.asarray(params.zero_point, np.float32).reshape(()))

    def grid(self) -> tuple[float, float]:
        """(scale, zero_point) the quantizer uses (``power_of_two`` grids snap to a power of two)."""
        scale = keras.ops.convert_to_numpy(grid_scale(self.scale, self.method))
        return float(scale), float(self.zero_point.numpy())

    def call(self, inputs: Any) -> Any:
        return fake_quant(
            inputs, grid_scale(self.scale, self.method), self.zero_point, self.qmin, self.qmax, self.rounding,
            self.n_bits,
        )  # fmt: skip

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            n_bits=self.n_bits,
            qmin=self.qmin,
            qmax=self.qmax,
            method=self.method,
            signed=self.signed,
            sample_shape=self.sample_shape,
            reference_count=self.reference_count,
            rounding=self.rounding,
        )
        return config
