"""Models quantized on the default platform (imx500) export to fully-integer TFLite files.

imx500 fuses chains TFLite does not (a conv into the add or the swish after it), so those tensors are not
quantized in the Keras model. Each carries an 8-bit grid searched at quantization time, which the exporter
uses where TFLite stores the tensor; the export report lists exactly these places. The nets are trained so
their top-1 decisions mean something (random nets have near ties everywhere).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat, keras_export_model
from kerasq.export.lowering import AveragePoolAsDepthwise
from kerasq.export.runtimes import float_tensors, predict, predict_litert
from kerasq.export.tflite import convert


def residual_net() -> keras.Model:
    i = keras.Input((32, 32, 3))
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(i)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    y = layers.Conv2D(32, 3, padding="same", activation="relu", name="b1")(x)
    y = layers.Conv2D(32, 3, padding="same", name="b2")(y)
    x = layers.ReLU(name="add_relu")(layers.Add(name="add")([x, y]))
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="c3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, activation="softmax", name="head")(x), name="residual")


def squeeze_excite_net() -> keras.Model:
    """Swish stem, depthwise + hard-swish, a squeeze-and-excite multiply with hard-sigmoid, a residual add."""
    i = keras.Input((32, 32, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="swish", name="stem")(i)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = layers.Activation("hard_swish", name="dw_hs")(layers.BatchNormalization(name="dw_bn")(y))
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    s = layers.Conv2D(8, 1, activation="relu", name="se_reduce")(s)
    s = layers.Conv2D(32, 1, activation="hard_sigmoid", name="se_expand")(s)
    y = layers.Multiply(name="se_mul")([y, s])
    y = layers.Conv2D(32, 1, name="project")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="c3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, activation="softmax", name="head")(x), name="squeeze_excite")


def sensor_net() -> keras.Model:
    """Conv1D over image rows as time steps (a sensor-style 1-D net)."""
    i = keras.Input((32, 32, 3))
    x = layers.Reshape((32, 96), name="rows")(i)
    x = layers.Conv1D(64, 5, padding="same", activation="relu", name="c1")(x)
    x = layers.Conv1D(64, 3, padding="same", use_bias=False, name="c2")(x)
    x = layers.Activation("swish", name="c2_swish")(layers.BatchNormalization(name="c2_bn")(x))
    x = layers.Conv1D(64, 3, dilation_rate=2, padding="causal", activation="relu", name="c3")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, activation="softmax", name="head")(x), name="sensor")


# Worked out by hand from the imx500 fusing rules (weighted -> activation, weighted -> add, add -> activation)
# and TFLite's (conv / depthwise / dense / add -> relu, relu6): the fused tensors TFLite stores. se_expand's
# hard-sigmoid is an affine map and a clip, which the exporter folds into the conv (no stored tensor).
EXPECTED_REQUANTIZED = {
    residual_net: {"b2"},
    squeeze_excite_net: {"stem", "dw", "project"},
    sensor_net: {"c2"},
}


@pytest.fixture(scope="module", params=list(EXPECTED_REQUANTIZED), ids=lambda f: f.__name__)
def trained(request, cifar):
    """(builder, the net trained six epochs on the 10,000 training images)."""
    x_train, y_train, _, _ = cifar
    keras.utils.set_random_seed(0)
    model = request.param()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=64, epochs=6, verbose=0)
    return request.param, model


def _export(model: keras.Model, calibration: np.ndarray, platform: str | None = None):
    tpc = None if platform is None else kerasq.get_target_platform_capabilities(platform)
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, calibration, target_platform_capabilities=tpc
    )
    return q_model, convert(q_model, QuantizationFormat.INT8)


@pytest.fixture(scope="module")
def exported(trained, cifar):
    """(builder, quantized model, conversion) on the default platform."""
    builder, model = trained
    return (builder, *_export(model, cifar[0][:256]))


def _agreement(q_model: keras.Model, flatbuffer: bytes, x: np.ndarray) -> tuple[float, float]:
    """(share of images whose file top-1 is a Keras top-1, SQNR in dB of the file's outputs)."""
    keras_out = q_model.predict(x, verbose=0)
    litert = predict_litert(flatbuffer, x)
    # Quantized softmax outputs tie often (1/256 steps); the file agrees when its top-1 is a Keras top-1.
    picked = np.take_along_axis(keras_out, np.argmax(litert, -1)[:, None], -1)[:, 0]
    sqnr = 10 * np.log10(np.sum(keras_out**2) / np.sum((litert - keras_out) ** 2))
    return float(np.mean(picked == keras_out.max(-1))), float(sqnr)


def test_the_file_is_fully_integer(exported):
    _, _, conversion = exported
    assert float_tensors(conversion.flatbuffer) == []


def test_the_file_agrees_with_the_keras_model_on_real_images(exported, cifar):
    """The file rounds each listed tensor once more than the Keras model (8 bits where imx500 keeps it exact),
    so its outputs are a little further from the Keras model's than on the tflite platform, which
    quantizes what TFLite stores. Measured on these nets (2,000 test images, one training each): top-1
    agreement 98.4-99.0%, SQNR 27-32 dB; for comparison the Keras quantized model agrees with the float
    model on 96.5-97.8%. With the no-clipping weight grids and shift-negative correction on (2026-12-01) the
    squeeze-and-excite net agreed on 97.8% (one run), 97.7% with biases on their int32 grid: below issue 12's
    99% goal. Layer by layer (file vs Keras given the file's own inputs) its convolutions are exact; what differs
    is what TFLite cannot do in one rounding: the three stored fused tensors (swish input 26% of the swish
    outputs one step off, hard-swish input 13%, the add's conv operand 34%) and TFLite's swish, a LOGISTIC onto
    its fixed 1/256 grid then a MUL. A Keras model that also rounded those agrees on 99.5% (fused tensors) and
    99.8% (and the swish's sigmoid): an imx500 model does not round them, so the bar stays below 99%."""
    _, q_model, conversion = exported
    agreement, sqnr = _agreement(q_model, conversion.flatbuffer, cifar[2])
    assert agreement >= 0.975
    assert sqnr >= 25.0


def test_on_the_tflite_platform_the_file_agrees_on_99_percent(trained, cifar):
    """Measured: 99.2-99.9% top-1 agreement, SQNR 33-38 dB; nothing requantized. The squeeze-and-excite net's
    0.9% left is TFLite's swish (its sigmoid rounded onto 1/256 before the multiply): a Keras swish rounded so
    agreed on 100% of the 2,000 images."""
    _, model = trained
    q_model, conversion = _export(model, cifar[0][:256], "tflite")
    assert conversion.requantized == ()
    assert float_tensors(conversion.flatbuffer) == []
    agreement, sqnr = _agreement(q_model, conversion.flatbuffer, cifar[2])
    assert agreement >= 0.99
    assert sqnr >= 30.0


def test_the_report_lists_every_requantized_place(exported):
    builder, _, conversion = exported
    assert {r.tensor for r in conversion.requantized} == EXPECTED_REQUANTIZED[builder]
    assert all(r.reason for r in conversion.requantized)


def test_fused_grids_survive_save_and_load(exported, tmp_path):
    _, q_model, conversion = exported
    path = keras_export_model(q_model, tmp_path / "q.keras").path
    loaded = keras.models.load_model(path)  # no custom_objects: FusedTensorRange is registered
    assert sum(isinstance(layer, kerasq.quantizers.FusedTensorRange) for layer in loaded.layers) > 0
    report = keras_export_model(loaded, tmp_path / "q.tflite", "tflite", "int8")
    assert report.path.read_bytes() == conversion.flatbuffer
    assert report.requantized == conversion.requantized


def test_tflm_runs_the_file_exactly_as_litert_reference_kernels(exported, cifar):
    """TFLM's kernels are LiteRT's reference kernels ported: bit-identical outputs through the whole net.
    LiteRT's default (XNNPACK) kernels round some requantizations the other way (at most 2 output steps per op,
    test_tflm.py), which travels downstream: top-1 agreed on 97.5-99% of 200 images (measured)."""
    pytest.importorskip("tflite_micro")
    _, _, conversion = exported
    x = cifar[2][:200]
    tflm = predict(conversion.flatbuffer, x, runtime="tflm")
    np.testing.assert_array_equal(tflm, predict_litert(conversion.flatbuffer, x, reference_kernels=True))
    default = predict_litert(conversion.flatbuffer, x)
    assert np.mean(tflm.argmax(-1) == default.argmax(-1)) >= 0.97


def _conv_bn_relu(x, filters: int, size: int):
    x = layers.Conv2D(filters, size, padding="same", use_bias=False)(x)
    return layers.Activation("relu")(layers.BatchNormalization(scale=False)(x))


def test_an_inception_block_after_a_max_pool_is_fully_integer():
    # InceptionV3's first block: a max pool read by three convolutions and an average pool whose output grid
    # differs on imx500. The converter copied the max pool and left the copy and the convolutions in float.
    inputs = keras.Input((16, 16, 3))
    x = layers.MaxPooling2D(3, strides=2)(_conv_bn_relu(inputs, 8, 3))
    pool = _conv_bn_relu(layers.AveragePooling2D(3, strides=1, padding="same")(x), 4, 1)
    branches = [_conv_bn_relu(x, 8, 1), _conv_bn_relu(x, 6, 1), _conv_bn_relu(x, 4, 1), pool]
    model = keras.Model(
        inputs, layers.Dense(4)(layers.GlobalAveragePooling2D()(layers.Concatenate()(branches)))
    )
    data = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 3)).astype("float32")
    model(data, training=True)  # batch-norm statistics that are not the identity
    q_model, _ = kerasq.ptq.keras_post_training_quantization(model, data)  # imx500
    conversion = convert(q_model, QuantizationFormat.INT8)
    assert float_tensors(conversion.flatbuffer) == []
    assert conversion.verification.sqnr_db >= 35.0


def _bn_relu(x):
    return layers.Activation("relu")(layers.BatchNormalization(epsilon=1.001e-5)(x))


def _dense_block(x, growth: int = 8):
    y = layers.Conv2D(4 * growth, 1, use_bias=False)(_bn_relu(x))
    y = layers.Conv2D(growth, 3, padding="same", use_bias=False)(_bn_relu(y))
    return layers.Concatenate()([x, y])


def test_a_densenet_transition_exports_with_its_average_pool_on_its_own_grid():
    # On imx500 the transition's average pool has an output grid of its own; TFLite's AVERAGE_POOL_2D keeps its
    # input scale and the converter rejected this graph ("violate the same scale constraint"), as it did
    # DenseNet121/169/201. The pool is exported as a depthwise convolution with the exact kernel 1/4.
    for seed in range(3):  # the converter's refusal depends on the grids: two of three seeds hit it
        conversion = _densenet_like_export(seed)
        assert float_tensors(conversion.flatbuffer) == []
        assert conversion.verification.sqnr_db >= 25.0  # 29-34 dB measured


def _densenet_like_export(seed: int):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = layers.MaxPooling2D(2)(_bn_relu(layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)))
    x = _dense_block(_dense_block(x))
    x = layers.AveragePooling2D(2)(layers.Conv2D(16, 1, use_bias=False)(_bn_relu(x)))
    x = _dense_block(_dense_block(x))
    model = keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling2D()(_bn_relu(x))))
    data = np.random.default_rng(seed).uniform(0, 1, (32, 32, 32, 3)).astype("float32")
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.0
    model(data, training=True)  # batch-norm statistics from the data
    q_model, _ = kerasq.ptq.keras_post_training_quantization(model, data)  # imx500
    return convert(q_model, QuantizationFormat.INT8)


def test_an_average_pool_as_depthwise_equals_the_pool():
    x = np.random.default_rng(1).normal(size=(2, 9, 7, 5)).astype("float32")
    for pool, strides in (((2, 2), (2, 2)), ((3, 2), (1, 2))):
        expected = keras.ops.convert_to_numpy(layers.AveragePooling2D(pool, strides)(x))
        lowered = keras.ops.convert_to_numpy(AveragePoolAsDepthwise(pool, strides)(x))
        np.testing.assert_allclose(lowered, expected, rtol=1e-6, atol=1e-6)
        assert AveragePoolAsDepthwise(pool, strides).compute_output_shape(x.shape) == expected.shape


def test_shift_negative_corrected_swish_exports_fully_integer():
    # Shift-negative correction is on by default (as in MCT): a swish with a small negative tail becomes a
    # ShiftedActivation (swish + shift, unsigned grid; the 'same' padding of the depthwise after it moved into
    # it). The file runs the swish onto the grid moved down by the shift, pads and adds the shift back.
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = layers.Activation("swish", name="s1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Activation("swish", name="s2")(x)
    x = layers.Conv2D(8, 1, name="c2")(x)
    model = keras.Model(inputs, layers.Dense(4, name="head")(layers.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("c1"), model.get_layer("dw")):  # swish outputs reach ~10: a tail of 3%
        layer.set_weights([w * 6.0 + (0.5 if w.ndim == 1 else 0.0) for w in layer.get_weights()])
    data = rng.uniform(0, 1, (64, 12, 12, 3)).astype("float32")
    q_model, info = kerasq.ptq.keras_post_training_quantization(model, data)  # imx500, default config
    shifted = [layer for layer in q_model.layers if isinstance(layer, kerasq.layers.ShiftedActivation)]
    assert {layer.name for layer in shifted} == {"s1", "s2"}
    assert shifted[0].padding is not None and shifted[0].shift > 0
    conversion = convert(q_model, QuantizationFormat.INT8)
    assert float_tensors(conversion.flatbuffer) == []
    assert not {"s1", "s2"} & {r.tensor for r in conversion.requantized}
    keras_out, file_out = q_model.predict(data, verbose=0), predict_litert(conversion.flatbuffer, data)
    sqnr = 10 * np.log10(np.sum(keras_out**2) / np.sum((file_out - keras_out) ** 2))
    assert sqnr >= 35.0
