"""concat_threshold_update: concatenation inputs share one grid; unbalanced inputs are reported."""

from __future__ import annotations

import keras
import numpy as np

import kerasq
from kerasq.core import CoreConfig, QuantizationConfig


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    small = layers.Conv2D(4, 3, padding="same", name="small")(inputs)
    large = layers.Conv2D(4, 3, padding="same", name="large")(inputs)
    x = layers.Concatenate(name="cat")([small, large])
    model = keras.Model(inputs, layers.Conv2D(2, 1, name="head")(x))
    kernel, bias = model.get_layer("large").get_weights()
    model.get_layer("large").set_weights([kernel * 20.0, bias])  # a 20x larger range than "small"
    return model


def test_inputs_share_the_concat_grid_and_the_spread_is_reported():
    model = _model()
    x = np.random.default_rng(0).uniform(-1, 1, size=(256, 8, 8, 3)).astype("float32")
    _, plain = kerasq.ptq.keras_post_training_quantization(model, x)
    assert plain.layers["small"].activation.scale != plain.layers["cat"].activation.scale
    assert len(plain.warnings) == 1 and "'cat'" in plain.warnings[0]
    spread = float(plain.warnings[0].split("differ by ")[1].split("x")[0])
    assert 10 < spread < 40
    qc = QuantizationConfig(concat_threshold_update=True)
    q, info = kerasq.ptq.keras_post_training_quantization(model, x, core_config=CoreConfig(qc))
    cat = info.layers["cat"].activation
    for branch in ("small", "large"):
        assert info.layers[branch].activation.scale == cat.scale
        assert info.layers[branch].activation.zero_point == cat.zero_point
    # concat of values already on its grid is exact: the concat quantizer changes nothing
    probe = keras.Model(
        q.inputs, [q.get_layer("small_activation_quantizer").output, q.get_layer("cat").output]
    )
    small_q, cat_out = probe.predict(x[:8], verbose=0)
    np.testing.assert_array_equal(cat_out[..., :4], small_q)
