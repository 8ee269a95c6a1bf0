"""Nested sub-models wherever PTQ meets them: behind a Rescaling or a conv (the transfer-learning shape), shared,
nested two deep, with two outputs or two inputs, called by keyword. Each is read into a complete graph,
quantizes close to the float model (PTQ and GPTQ) and exports to an INT8 TFLite file that computes what the
Keras quantized model computes."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from helpers import assert_same_function, random_bn
from keras import layers

import kerasq
from kerasq.export.tflite import QuantizationFormat, convert_to_tflite
from kerasq.graph import UnsupportedModelError, read_model

SHAPE = (16, 16, 3)


def _backbone(name: str = "backbone", channels: int = 3) -> keras.Model:
    """Conv, batch norm, relu and a residual add: what a pretrained backbone is made of."""
    image = keras.Input((*SHAPE[:2], channels))
    x = layers.ReLU()(random_bn(layers.Conv2D(8, 3, padding="same", use_bias=False)(image), seed=1))
    x = layers.Add()([x, layers.Conv2D(8, 3, padding="same", activation="relu")(x)])
    return keras.Model(image, x, name=name)


def _classifier(image: keras.KerasTensor, features: keras.KerasTensor, name: str) -> keras.Model:
    return keras.Model(image, layers.Dense(10)(layers.GlobalAveragePooling2D()(features)), name=name)


def rescaling_then_backbone() -> keras.Model:
    """The issue's model: ``Rescaling(1/255) -> backbone -> pooling -> Dense``."""
    image = keras.Input(SHAPE)
    return _classifier(image, _backbone()(layers.Rescaling(1 / 255)(image)), "rescaling_then_backbone")


def conv_then_backbone() -> keras.Model:
    image = keras.Input(SHAPE)
    x = layers.Conv2D(3, 1, activation="relu")(layers.Rescaling(1 / 255)(image))
    return _classifier(image, _backbone()(x), "conv_then_backbone")


def shared_backbone() -> keras.Model:
    """One backbone applied to two branches (a siamese pair)."""
    image, backbone = keras.Input(SHAPE), _backbone()
    x = layers.Rescaling(1 / 255)(image)
    left = backbone(layers.Conv2D(3, 1, name="left")(x))
    right = backbone(layers.Conv2D(3, 1, name="right")(x))
    return _classifier(image, layers.Add()([left, right]), "shared_backbone")


def sequential_in_functional_in_functional() -> keras.Model:
    block = keras.Sequential([keras.Input((*SHAPE[:2], 8)), layers.Conv2D(8, 1), layers.ReLU()], name="block")
    inner = keras.Input(SHAPE)
    middle = keras.Model(inner, block(_backbone("inner_backbone")(inner)), name="middle")
    image = keras.Input(SHAPE)
    return _classifier(image, middle(layers.Rescaling(1 / 255)(image)), "two_deep")


def backbone_with_two_outputs() -> keras.Model:
    inner = keras.Input(SHAPE)
    early = layers.Conv2D(8, 3, padding="same", activation="relu")(inner)
    late = layers.Conv2D(4, 1, activation="relu")(early)
    two_outputs = keras.Model(inner, [early, late], name="two_outputs")
    image = keras.Input(SHAPE)
    early, late = two_outputs(layers.Rescaling(1 / 255)(image))
    return _classifier(image, layers.Concatenate()([early, late]), "two_outputs_outer")


def backbone_with_two_inputs() -> keras.Model:
    a, b = keras.Input((*SHAPE[:2], 8)), keras.Input((*SHAPE[:2], 8))
    two_inputs = keras.Model([a, b], layers.Add()([layers.Conv2D(8, 1)(a), b]), name="two_inputs")
    image = keras.Input(SHAPE)
    x = layers.Rescaling(1 / 255)(image)
    wide = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    return _classifier(
        image, two_inputs([wide, layers.Conv2D(8, 1, activation="relu")(x)]), "two_inputs_outer"
    )


def backbone_called_by_keyword() -> keras.Model:
    image = keras.Input(SHAPE)
    return _classifier(image, _backbone()(inputs=layers.Rescaling(1 / 255)(image)), "keyword_call")


BUILDERS = [rescaling_then_backbone, conv_then_backbone, shared_backbone, sequential_in_functional_in_functional,
            backbone_with_two_outputs, backbone_with_two_inputs, backbone_called_by_keyword]  # fmt: skip
IMAGES = np.random.default_rng(0).uniform(0, 255, size=(64, *SHAPE)).astype("float32")


@cache
def _model(builder: Callable[[], keras.Model]) -> keras.Model:
    keras.utils.set_random_seed(0)
    return builder()


@cache
def _quantized(builder: Callable[[], keras.Model]) -> keras.Model:
    tpc = kerasq.get_target_platform_capabilities("tensorflow", "tflite")
    return kerasq.ptq.keras_post_training_quantization(
        _model(builder), IMAGES, target_platform_capabilities=tpc
    )[0]


def _assert_close_to_float(model: keras.Model, q_model: keras.Model) -> None:
    expected, got = model.predict(IMAGES, verbose=0), q_model.predict(IMAGES, verbose=0)
    sqnr = 10 * np.log10(np.sum(expected**2) / np.sum((expected - got) ** 2))
    assert sqnr > 30.0, f"SQNR {sqnr:.1f} dB"
    assert np.mean(expected.argmax(-1) == got.argmax(-1)) >= 0.95


@pytest.mark.parametrize("builder", BUILDERS)
def test_nested_model_is_read_into_a_complete_graph(builder):
    """Every tensor a node reads is produced by a node or is a model input (today's bare KeyError otherwise)."""
    model = _model(builder)
    graph = read_model(model)
    produced = set(graph.inputs) | {t for node in graph.nodes for t in node.outputs}
    assert all(t in produced for node in graph.nodes for t in node.inputs)
    assert not any(isinstance(node.op, keras.Model) for node in graph.nodes)
    assert_same_function(model, graph)


@pytest.mark.parametrize("builder", BUILDERS)
def test_nested_model_quantizes_close_to_float(builder):
    _assert_close_to_float(_model(builder), _quantized(builder))


def test_shared_nested_model_stays_one_set_of_layers():
    q_model = _quantized(shared_backbone)
    convs = [layer for layer in q_model.layers
             if isinstance(layer, kerasq.QuantizeWrapper) and type(layer.layer) is layers.Conv2D]  # fmt: skip
    assert len(convs) == 4  # left, right and the backbone's two convs, once each for their two calls


@pytest.mark.parametrize("builder", [rescaling_then_backbone, sequential_in_functional_in_functional])
def test_gptq_on_nested_model_is_close_to_float(builder):
    config = kerasq.gptq.get_keras_gptq_config(n_epochs=1)
    q_model, _ = kerasq.gptq.keras_gradient_post_training_quantization(_model(builder), IMAGES, config)
    _assert_close_to_float(_model(builder), q_model)


def _litert(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize(
    "builder",
    [rescaling_then_backbone, shared_backbone,
     sequential_in_functional_in_functional, backbone_with_two_outputs, backbone_with_two_inputs],
)  # fmt: skip
def test_nested_model_exports_to_int8_tflite(builder):
    q_model = _quantized(builder)
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    step = float(q_model.layers[-1].scale.numpy())
    diff = np.abs(_litert(flatbuffer, IMAGES) - q_model.predict(IMAGES, verbose=0))
    assert diff.max() <= step * 1.0001, f"max diff {diff.max()} > one output step {step}"


@pytest.mark.filterwarnings("ignore:Layer 'masked_sub'")
def test_nested_model_given_a_mask_tensor_is_refused_by_name():
    inner = keras.Input((6,))
    sub = keras.Model(inner, layers.Dense(4)(inner), name="masked_sub")
    x, mask = keras.Input((6,)), keras.Input((6,), dtype="bool")
    model = keras.Model([x, mask], sub(x, mask=mask))
    with pytest.raises(UnsupportedModelError, match="'masked_sub'.*outside its `inputs`"):
        read_model(model)
