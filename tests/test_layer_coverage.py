"""Every supported layer kind survives quantization: W16A16 matches float closely, unknown layers stay float."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

import kerasq
from kerasq.builder import build_model
from kerasq.graph import read_model
from kerasq.graph.rewrites import fold_batch_norms, lower_affines, split_separable_convs


@keras.saving.register_keras_serializable(package="kerasq_tests")
class Doubler(layers.Layer):
    """A layer kerasq does not know."""

    def call(self, x):
        return x * 2.0


def _randomize_batch_norms(model: keras.Model) -> None:
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape),
            ])  # fmt: skip


def build_zoo(with_unknown: bool = False) -> keras.Model:
    keras.utils.set_random_seed(3)
    norm = layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.05, 0.06, 0.07])
    image = keras.Input((16, 16, 3), name="image")
    side = keras.Input((6,), name="side")
    x = layers.Rescaling(2.0, offset=-1.0)(image)
    x = norm(x)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(max_value=6.0)(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.DepthwiseConv2D(3, activation="hard_swish")(x)
    a = layers.SeparableConv2D(8, 3, padding="same")(x)
    a = layers.LeakyReLU(0.1)(a)
    b = layers.Conv2D(8, 1, activation="gelu")(x)
    b = layers.PReLU()(b)
    x = layers.Concatenate()([a, b])
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="elu")(x)
    c = layers.Activation("tanh")(x)
    d = layers.Activation("sigmoid")(x)
    x = layers.Multiply()([c, d])
    x = layers.Subtract()([x, c])
    x = layers.Add()([x, d])
    x = ops.relu(ops.add(x, 0.1))
    x = layers.MaxPooling2D(2)(x)
    x = layers.UpSampling2D()(x)
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="swish")(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Permute((2, 1, 3))(x)
    if with_unknown:
        x = Doubler(name="doubler")(x)
    x = layers.Reshape((16 * 16, 8))(x)
    x = layers.Conv1D(8, 3, padding="causal", activation="relu")(x)
    x = layers.DepthwiseConv1D(3, padding="same")(x)
    x = layers.Dense(4, activation="silu")(x)  # Dense on a 3-D input
    x = layers.GlobalAveragePooling1D()(x)
    s = layers.Dense(4, activation="softmax")(side)
    x = layers.Concatenate()([x, s])
    x = layers.Flatten()(x)
    out = layers.Dense(5, activation="softmax")(x)
    model = keras.Model([image, side], out, name="zoo")
    _randomize_batch_norms(model)
    return model


@pytest.fixture(scope="module")
def zoo_data():
    rng = np.random.default_rng(0)
    return [rng.uniform(0, 1, (64, 16, 16, 3)).astype("float32"), rng.normal(0, 1, (64, 6)).astype("float32")]


def test_rewritten_float_rebuild_matches_original(zoo_data):
    model = build_zoo()
    graph = split_separable_convs(lower_affines(fold_batch_norms(read_model(model))))
    assert not any(n.kind in ("batch_norm", "separable_conv") for n in graph.nodes)
    rebuilt = build_model(graph).model
    np.testing.assert_allclose(rebuilt.predict(zoo_data, verbose=0), model.predict(zoo_data, verbose=0),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_w16a16_matches_float(zoo_data):
    model = build_zoo()
    qc = kerasq.core.QuantizationConfig(weights_n_bits=16, activation_n_bits=16)
    q_model, info = kerasq.ptq.keras_post_training_quantization(
        model, zoo_data, core_config=kerasq.core.CoreConfig(qc)
    )
    assert info.float_layers == {}
    wrappers = [w for w in q_model.layers if isinstance(w, kerasq.QuantizeWrapper)]
    # SeparableConv2D runs as depthwise + pointwise (split_separable_convs), as on devices; the input's
    # Rescaling and Normalization run as one 1x1 depthwise convolution, and so does ops.add(x, 0.1)
    # (lower_affines).
    assert {w.kind for w in wrappers} == {"conv", "depthwise_conv", "conv_transpose", "dense"}
    weighted = (layers.Conv1D, layers.Conv2D, layers.DepthwiseConv1D, layers.DepthwiseConv2D,
                layers.SeparableConv2D, layers.Conv2DTranspose, layers.Dense)  # fmt: skip
    assert len(wrappers) == sum(isinstance(layer, weighted) for layer in model.layers) + 3 == 14
    diff = np.abs(q_model.predict(zoo_data, verbose=0) - model.predict(zoo_data, verbose=0)).max()
    assert diff < 2e-3


def test_w8a8_stays_close_to_float(zoo_data):
    model = build_zoo()
    q_model, _ = kerasq.ptq.keras_post_training_quantization(model, zoo_data)
    ref = model.predict(zoo_data, verbose=0)
    diff = np.abs(q_model.predict(zoo_data, verbose=0) - ref).max()
    assert diff < 0.1 * np.abs(ref).max()


def test_unknown_layer_kept_float_and_reported(zoo_data, tmp_path):
    model = build_zoo(with_unknown=True)
    q_model, info = kerasq.ptq.keras_post_training_quantization(model, zoo_data)
    assert list(info.float_layers) == [model.get_layer("doubler").name]
    assert "Doubler" in info.float_layers["doubler"]
    doubler = q_model.get_layer("doubler")
    assert isinstance(doubler, Doubler)
    assert "doubler_activation_quantizer" not in [layer.name for layer in q_model.layers]
    q_model.save(tmp_path / "zoo.keras")
    loaded = keras.models.load_model(tmp_path / "zoo.keras")
    np.testing.assert_array_equal(loaded.predict(zoo_data, verbose=0), q_model.predict(zoo_data, verbose=0))


def test_sequential_and_nested_models_quantize(zoo_data):
    x = zoo_data[0]
    keras.utils.set_random_seed(4)
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3)), layers.Conv2D(8, 3, activation="relu"), layers.DepthwiseConv2D(3)],
        name="backbone",
    )
    sequential = keras.Sequential(
        [keras.Input((16, 16, 3)), layers.Conv2D(4, 3), layers.Flatten(), layers.Dense(3)]
    )
    image = keras.Input((16, 16, 3))
    nested = keras.Model(image, layers.Dense(3)(layers.GlobalAveragePooling2D()(backbone(image))))
    for model, weighted in ((sequential, 2), (nested, 3)):
        q_model, info = kerasq.ptq.keras_post_training_quantization(model, x)
        assert info.float_layers == {}
        wrappers = [w for w in q_model.layers if isinstance(w, kerasq.QuantizeWrapper)]
        assert len(wrappers) == weighted
        ref = model.predict(x, verbose=0)
        assert np.abs(q_model.predict(x, verbose=0) - ref).max() < 0.05 * np.abs(ref).max()
