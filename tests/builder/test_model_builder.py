"""Copying layers into the built model: Lambda layers without deserializing their code; clear refusals for
layers that cannot be copied."""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import kerasq
from kerasq.builder import build_model, clone_operation
from kerasq.errors import ModelError
from kerasq.graph import read_model

IMAGES = np.random.default_rng(0).uniform(size=(64, 8, 8, 3)).astype("float32")

LAMBDAS: dict[str, Callable[[], layers.Lambda]] = {
    "python_lambda": lambda: layers.Lambda(lambda t: t * 2 + 1, name="lam"),
    "tf_function": lambda: layers.Lambda(tf.nn.relu6, name="lam"),
    "partial": lambda: layers.Lambda(functools.partial(tf.nn.leaky_relu, alpha=0.1), name="lam"),
    "arguments": lambda: layers.Lambda(lambda t, k: t * k, arguments={"k": 3.0}, name="lam"),
    "output_shape_function": lambda: layers.Lambda(
        lambda t: ops.concatenate([t, -t], axis=-1), output_shape=lambda s: (*s[:-1], 2 * s[-1]), name="lam"
    ),
    "output_shape_tuple": lambda: layers.Lambda(
        lambda t: ops.concatenate([t, -t], axis=-1), output_shape=(8, 8, 8), name="lam"
    ),
}


def _with(middle: layers.Layer) -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input(IMAGES.shape[1:])
    x = middle(layers.Conv2D(4, 1, name="before")(image))
    return keras.Model(image, layers.Conv2D(2, 1, name="after")(x))


def _sqnr(expected: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(expected**2) / np.sum((expected - got) ** 2)))


@pytest.mark.parametrize("make", LAMBDAS.values(), ids=LAMBDAS.keys())
def test_lambda_is_copied_around_its_function(make):
    """A new Lambda calling the same function: no bytecode round trip (Keras's safe-mode error before)."""
    model = _with(make())
    graph = read_model(model)
    node = graph.node("lam")
    copy = clone_operation(node)
    assert isinstance(copy, layers.Lambda) and copy is not node.op
    assert copy.function is node.op.function
    rebuilt = build_model(graph).model
    np.testing.assert_array_equal(rebuilt.predict(IMAGES, verbose=0), model.predict(IMAGES, verbose=0))


@pytest.mark.parametrize("make", LAMBDAS.values(), ids=LAMBDAS.keys())
def test_model_with_lambda_quantizes_with_the_lambda_in_float(make):
    model = _with(make())
    q_model, info = kerasq.ptq.keras_post_training_quantization(model, IMAGES)
    assert "Lambda" in info.float_layers["lam"]
    assert _sqnr(model.predict(IMAGES, verbose=0), q_model.predict(IMAGES, verbose=0)) > 30.0
    assert model.get_layer("lam").output is not None  # the user's Lambda was not called again


def test_gptq_on_model_with_lambda():
    model = _with(LAMBDAS["python_lambda"]())
    config = kerasq.gptq.get_keras_gptq_config(n_epochs=1)
    q_model, _ = kerasq.gptq.keras_gradient_post_training_quantization(model, IMAGES, config)
    assert _sqnr(model.predict(IMAGES, verbose=0), q_model.predict(IMAGES, verbose=0)) > 30.0


def test_shared_lambda_inside_a_nested_model():
    inner = keras.Input((8, 8, 4))
    double = layers.Lambda(lambda t: t * 2 + 1, name="lam")
    sub = keras.Model(inner, double(layers.Conv2D(4, 1)(double(inner))), name="sub")
    model = _with(sub)
    q_model, _ = kerasq.ptq.keras_post_training_quantization(model, IMAGES)
    assert [layer.name for layer in q_model.layers].count("lam") == 1  # still one (shared) layer
    assert _sqnr(model.predict(IMAGES, verbose=0), q_model.predict(IMAGES, verbose=0)) > 30.0


class _ShiftLambda(layers.Lambda):
    """A Lambda subclass: kerasq cannot know its constructor, so it goes through from_config."""


class _Scale(layers.Layer):
    def __init__(self, factor: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self) -> dict:
        return super().get_config()  # forgets ``factor``: from_config cannot rebuild the layer


UNCOPYABLE: dict[str, Callable[[], layers.Layer]] = {
    "lambda_subclass": lambda: _ShiftLambda(lambda t: t + 1, name="shift"),
    "incomplete_get_config": lambda: _Scale(2.0, name="shift"),
}


@pytest.mark.parametrize("make", UNCOPYABLE.values(), ids=UNCOPYABLE.keys())
def test_layer_that_cannot_be_copied_is_refused_by_name(make):
    model = _with(make())
    with pytest.raises(ModelError, match="'shift' .*cannot be copied.*get_config") as caught:
        kerasq.ptq.keras_post_training_quantization(model, IMAGES)
    assert "safe_mode" not in str(caught.value)  # Keras's loading advice does not apply here
