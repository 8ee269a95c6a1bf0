"""The Keras quantized model adds each bias on the int32 grid the INT8 file stores it on.

TFLite stores a bias as int32 at scale ``input scale * kernel scale`` (per output channel). Where that step is
coarse next to the output grid, a float bias and its int32 copy round to different output levels. It is coarse
for a batch normalization after a ReLU (run as a one-tap depthwise convolution, kernel ``gamma / sqrt(var)`` at
level 127) on a channel the ReLU leaves at 0: its variance is tiny, so its kernel scale is large, and the whole
channel is the bias alone. On the cifar-10-model wheel's pretrained CNN two of the first normalization's 64
channels were so: 3.1% of that tensor one step off on the tflite platform (1.6% on imx500), which grew to
30-47% of the logits and 2-3% of the top-1 decisions.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat, keras_export_model
from kerasq.export.runtimes import predict_litert
from kerasq.export.tflite import convert
from kerasq.quantizers import QuantizeWrapper

DEAD = 12  # channels the ReLU leaves at zero


def relu_then_bn_net() -> keras.Model:
    """conv -> ReLU -> BatchNormalization (not foldable into the conv), then a dense head."""
    i = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, activation="relu", name="conv")(i)
    x = layers.BatchNormalization(epsilon=1e-5, name="bn")(x)
    x = layers.Conv2D(8, 1, name="mix")(x)
    model = keras.Model(i, layers.Dense(4, name="head")(layers.Flatten()(x)), name="relu_bn")
    rng = np.random.default_rng(0)
    kernel, bias = model.get_layer("conv").get_weights()
    bias[:DEAD] = -100.0  # these channels never fire
    model.get_layer("conv").set_weights([kernel * 4.0, bias])
    dead = np.arange(16) < DEAD
    variance = np.where(dead, 1e-6, 1.0).astype("float32")  # a dead channel: mean 0, variance ~ 0
    mean = np.where(dead, 0.0, rng.normal(0, 0.3, 16)).astype("float32")
    beta = np.linspace(-0.6, 0.6, 16).astype("float32")
    model.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 16).astype("float32"), beta, mean, variance])
    return model


@pytest.fixture(scope="module", params=["imx500", "tflite"])
def quantized(request):
    """(q_model, conversion, images) on one platform."""
    keras.utils.set_random_seed(0)  # the kernels' initialization: not left to the tests run before
    data = np.random.default_rng(1).uniform(0, 1, (64, 8, 8, 3)).astype("float32")
    tpc = kerasq.get_target_platform_capabilities(request.param)
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        relu_then_bn_net(), data, target_platform_capabilities=tpc
    )
    return q_model, convert(q_model, QuantizationFormat.INT8), data


def _bn_output_steps(q_model: keras.Model, flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """File minus Keras at the normalization's output, in steps of its grid (the file's stored tensor)."""
    quantizer = q_model.get_layer("bn_activation_quantizer")
    expected = keras.Model(q_model.inputs, quantizer.output).predict(x, verbose=0)
    scale, _ = quantizer.grid()
    interpreter = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    for detail in interpreter.get_tensor_details():
        params = detail["quantization_parameters"]
        if detail["dtype"] == np.int8 and "/bn" in detail["name"] and len(params["scales"]) == 1:
            value = interpreter.get_tensor(detail["index"]).astype(np.float64)
            if value.shape == expected.shape and abs(params["scales"][0] - scale) < 1e-6 * scale:
                got = (value - params["zero_points"][0]) * params["scales"][0]
                return np.round((got - expected) / scale)
    raise AssertionError("the file has no tensor on the normalization's output grid")


def _bn_bias(flatbuffer: bytes) -> np.ndarray:
    """The int32 bias the file stores for the normalization."""
    interpreter = Interpreter(model_content=flatbuffer)
    biases = [interpreter.get_tensor(d["index"]) for d in interpreter.get_tensor_details()
              if d["dtype"] == np.int32 and "/bn" in d["name"] and d["shape"].tolist() == [16]]  # fmt: skip
    assert len(biases) == 1
    return biases[0]


def test_the_bias_is_on_its_int32_grid(quantized):
    q_model, _, _ = quantized
    wrapper = q_model.get_layer("quant_bn")
    input_scale = q_model.get_layer("conv_activation_activation_quantizer").grid()[0]
    assert wrapper.input_scale == pytest.approx(input_scale)
    step = input_scale * wrapper.kernel_grid("kernel")[0].reshape(-1)
    levels = keras.ops.convert_to_numpy(wrapper.quantized_bias()) / step
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    # the dead channels' kernels are ~1000: their bias steps are coarse, and rounding moved those biases
    float_bias = wrapper.layer.bias.numpy()
    assert np.max(np.abs(levels - float_bias / step)[:DEAD]) > 0.1


def test_the_file_computes_the_normalization_exactly(quantized):
    q_model, conversion, data = quantized
    steps = _bn_output_steps(q_model, conversion.flatbuffer, data)
    # With a float bias in Keras: every element of the dead channels the rounding moved (up to 2 of 16
    # channels). Left: float32 ties TFLite's integer arithmetic decides (0 to 1 element in 36,864, seeds 0-7).
    assert np.mean(steps != 0) <= 1e-4
    out = q_model.predict(data, verbose=0)
    np.testing.assert_allclose(predict_litert(conversion.flatbuffer, data), out, atol=1e-5)


def test_the_file_stores_the_bias_keras_adds(quantized):
    q_model, conversion, _ = quantized
    wrapper = q_model.get_layer("quant_bn")
    step = wrapper.input_scale * wrapper.kernel_grid("kernel")[0].reshape(-1)
    levels = np.round(keras.ops.convert_to_numpy(wrapper.quantized_bias()) / step).astype(np.int64)
    np.testing.assert_array_equal(_bn_bias(conversion.flatbuffer), levels)


def test_the_input_scale_survives_save_and_load(quantized, tmp_path):
    q_model, _, data = quantized
    loaded = keras.models.load_model(keras_export_model(q_model, tmp_path / "q.keras").path)
    wrappers = [layer for layer in loaded.layers if isinstance(layer, QuantizeWrapper)]
    assert [w.input_scale for w in wrappers] == [q_model.get_layer(w.name).input_scale for w in wrappers]
    assert all(w.input_scale is not None for w in wrappers)
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), q_model.predict(data, verbose=0))


def test_a_wrapper_without_input_scale_adds_its_float_bias():
    layer = layers.Dense(3)
    layer.build((None, 2))
    layer.bias.assign(np.array([0.1234, -0.5678, 0.9], np.float32))
    spec = {"n_bits": 8, "qmin": -127, "qmax": 127, "method": "symmetric", "axes": [1]}
    wrapper = QuantizeWrapper(layer, kind="dense", kernel_quantizers={"kernel": spec})
    wrapper.build((None, 2))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper.quantized_bias()), layer.bias.numpy())
    rounded = QuantizeWrapper.from_config({**wrapper.get_config(), "input_scale": 0.25})
    rounded.build((None, 2))
    rounded.layer.bias.assign(layer.bias.numpy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rounded.quantized_bias()), [0.0, -0.5, 1.0])


def test_a_bias_at_a_tie_is_exported_as_keras_rounds_it(quantized):
    # TensorFlow rounds ties to even, the converter away from zero: the file gets Keras's rounded bias, so the
    # converter only ever sees whole levels
    q_model, _, _ = quantized
    wrapper = q_model.get_layer("quant_bn")
    step = np.float32(wrapper.input_scale) * wrapper.kernel_grid("kernel")[0].reshape(-1).astype(np.float32)
    halves = np.resize(np.array([0.5, 2.5, -2.5, 4.5, -0.5], np.float32), 16)
    ties = (halves * step).astype(np.float32)
    exact = ties / step == halves  # a tie in float32, as Keras divides (a product may lose it by an ulp)
    assert np.sum(exact) >= 10
    halves, ties = np.where(exact, halves, 0.0), np.where(exact, ties, 0.0)
    original = wrapper.layer.bias.numpy()
    wrapper.layer.bias.assign(ties)
    try:
        flatbuffer = convert(q_model, QuantizationFormat.INT8, verify=False).flatbuffer
        expected = np.round(keras.ops.convert_to_numpy(wrapper.quantized_bias()) / step).astype(np.int64)
    finally:
        wrapper.layer.bias.assign(original)
    np.testing.assert_array_equal(expected, np.round(halves / 2) * 2)  # half to even
    np.testing.assert_array_equal(_bn_bias(flatbuffer), expected)
