"""Quantization-aware training: fine-tune a kerasq quantized model with labels, using plain ``model.fit``.

A quantized model (from PTQ or gradient-based PTQ) is an ordinary Keras model: its wrapped layers' kernels and
biases are trainable, and rounding passes gradients straight through, so ``model.compile(...)`` and
``model.fit(...)`` train it as it will run on the device. Kernels may leave their grids while training; the
quantizers put them back on every forward pass and at export. Scales and zero points are frozen by default;
``trainable_quantization_params(model)`` returns a copy whose kernel scales learn too (learned-step-size
gradients; power-of-two scales stay powers of two). Activation grids stay frozen: the platform ties many of them
together (pooling and concatenation share their input's grid, softmax has a fixed output grid), and training
them one by one would break those ties and the INT8 export. Zero points always stay fixed (integers).
"""

from __future__ import annotations

from typing import Any

import keras

from kerasq.errors import ConfigError, ModelError, UnsupportedModelError
from kerasq.quantizers import QuantizeWrapper


def trainable_quantization_params(model: keras.Model, trainable: bool = True) -> keras.Model:
    """A copy of the quantized ``model`` (same weights) whose kernel scales are trainable (or frozen: ``False``).

    The flag is part of each quantizer's config, so it survives saving and loading. ``model`` is not changed.
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            "trainable_quantization_params takes a keras.Model: pass the model keras_post_training_quantization "
            f"returned, got {type(model).__name__}."
        )
    if not isinstance(trainable, bool):
        raise ConfigError(f"trainable must be True or False, got {trainable!r}.")
    if not any(isinstance(layer, QuantizeWrapper) for layer in model.layers):
        raise ModelError(
            f"Model {model.name!r} has no kerasq quantizers; pass the model returned by "
            "keras_post_training_quantization or keras_gradient_post_training_quantization."
        )

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, QuantizeWrapper):
            config: dict[str, Any] = {**layer.get_config(), "train_scale": bool(trainable)}
            return type(layer).from_config(config)
        return type(layer).from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    # by name within each layer, not by position: a trainable variable can move in ``layer.weights``
    for original, cloned in zip(model.layers, copy.layers, strict=True):
        source = {v.name: v for v in original.weights}
        for variable in cloned.weights:
            variable.assign(source[variable.name])
    return copy
