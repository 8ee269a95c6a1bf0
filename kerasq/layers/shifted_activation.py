"""``ShiftedActivation``: ``pad(act(x)) + shift``, the activation half of shift-negative correction.

Every activation it is used with maps 0 to 0, so zero-padding *after* the activation equals padding its
input: ``pad(act(x)) + s == act(pad(x)) + s``. The padded border therefore holds ``s``, which is what a
following "same"-padded conv sees once its padding is moved here and the conv becomes "valid".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import keras

from kerasq.errors import ConfigError, ModelError


def _normalize_padding(padding: Any) -> tuple[tuple[int, int], ...] | None:
    if padding is None:
        return None
    try:
        pairs = tuple((int(before), int(after)) for before, after in padding)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"ShiftedActivation padding must be None or (before, after) pairs of integers, one per spatial axis, "
            f"e.g. ((1, 1), (1, 1)); got {padding!r}."
        ) from err
    if not pairs or any(p < 0 for pair in pairs for p in pair):
        raise ConfigError(
            f"ShiftedActivation padding must be non-negative (before, after) pairs, one per spatial axis; "
            f"got {padding!r}."
        )
    return pairs


@keras.saving.register_keras_serializable(package="kerasq")
class ShiftedActivation(keras.layers.Layer):
    """Computes ``pad(activation(x)) + shift`` (channels_last; spatial axes are 1 .. rank-2).

    Args:
        activation: name of a Keras activation (``"swish"``, ``"gelu"``, ...) or a serialized Keras layer
            (``keras.layers.serialize(layer)``) for parametrized activations (LeakyReLU, ELU, PReLU). A layer
            is built in ``build()``; its weights are this layer's weights (``get_weights`` order).
        shift: the constant added to every output element (padding included).
        padding: ``None`` or one ``(before, after)`` pair of zero padding per spatial axis.
    """

    def __init__(self, activation: str | dict, shift: float, padding: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not math.isfinite(shift):
            raise ConfigError(f"ShiftedActivation shift must be a finite number; got {shift!r}.")
        self.shift: float = float(shift)
        self.padding: tuple[tuple[int, int], ...] | None = _normalize_padding(padding)
        self._function: Callable[[Any], Any] | None
        self.sublayer: keras.layers.Layer | None
        if isinstance(activation, str):
            self.activation_config: str | dict = activation
            try:
                self._function = keras.activations.get(activation)
            except ValueError as err:
                raise ConfigError(
                    f"ShiftedActivation activation {activation!r} is not a Keras activation name; use one such as "
                    "'swish' or 'gelu', or a serialized Keras layer."
                ) from err
            self.sublayer = None
        elif isinstance(activation, dict):
            self.activation_config = dict(activation)
            self._function = None
            try:
                self.sublayer = keras.layers.deserialize(self.activation_config)
            except (TypeError, ValueError, KeyError) as err:
                raise ConfigError(
                    "ShiftedActivation activation must be a serialized Keras layer "
                    f"(keras.layers.serialize(layer)); could not deserialize it: {err}"
                ) from err
        else:
            raise ConfigError(
                "ShiftedActivation activation must be an activation name or a serialized Keras layer; "
                f"got {type(activation).__name__}."
            )

    def build(self, input_shape: Any) -> None:
        if self.padding is not None and len(input_shape) != len(self.padding) + 2:
            raise ModelError(
                f"{self.name}: {len(self.padding)} padding pairs need a rank-{len(self.padding) + 2} input "
                f"(batch, spatial..., channels); got shape {tuple(input_shape)}"
            )
        if self.sublayer is not None and not self.sublayer.built:
            self.sublayer.build(input_shape)

    def activate(self, inputs: Any) -> Any:
        """The activation alone: no padding, no shift."""
        if self.sublayer is not None:
            return self.sublayer(inputs)
        assert self._function is not None, "a ShiftedActivation has a sublayer or an activation function"
        return self._function(inputs)

    def call(self, inputs: Any) -> Any:
        outputs = self.activate(inputs)
        if self.padding is not None:
            outputs = keras.ops.pad(outputs, [(0, 0), *self.padding, (0, 0)])
        return outputs + keras.ops.cast(self.shift, outputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        shape = list(input_shape)
        for axis, (before, after) in enumerate(self.padding or (), start=1):
            shape[axis] = None if shape[axis] is None else shape[axis] + before + after
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        padding = None if self.padding is None else [list(pair) for pair in self.padding]
        config.update(activation=self.activation_config, shift=self.shift, padding=padding)
        return config
