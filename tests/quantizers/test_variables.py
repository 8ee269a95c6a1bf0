"""Quantizer variables: the Keras paths add_weight gives, one TensorFlow handle name for all (kernel cache)."""

from __future__ import annotations

import keras
import numpy as np

from kerasq.quantizers import ActivationQuantizer, FusedTensorRange, QuantizeWrapper


def _wrapper(name: str) -> QuantizeWrapper:
    grid = {"n_bits": 8, "qmin": -127, "qmax": 127, "method": "symmetric", "axes": [1]}
    layer = QuantizeWrapper(keras.layers.Dense(4, name=f"{name}_dense"), kind="dense",
                            kernel_quantizers={"kernel": grid}, name=name)  # fmt: skip
    layer.build((None, 3))
    return layer


def test_quantizer_variables_keep_their_paths_and_share_one_tensorflow_name():
    """TensorFlow caches an eager kernel per distinct attribute set, the handle's name included: variables
    named after their layer each instantiate a kernel (~1.5 ms). Two layers' variables must share the name."""
    a, b = ActivationQuantizer(name="qa"), ActivationQuantizer(name="qb")
    assert [v.path for v in a.weights] == ["qa/scale", "qa/zero_point"]
    assert a.scale.value.name == b.scale.value.name and a.zero_point.value.name == b.zero_point.value.name
    f, g = FusedTensorRange(name="fa"), FusedTensorRange(name="fb")
    assert [v.path for v in f.weights] == ["fa/minimum", "fa/maximum"]
    assert f.maximum.value.name == g.maximum.value.name
    w, u = _wrapper("wa"), _wrapper("wb")
    assert [v.path for v in w.non_trainable_weights] == ["wa/kernel_scale", "wa/kernel_zero_point"]
    assert w.grid_variables("kernel")[0].value.name == u.grid_variables("kernel")[0].value.name
    assert np.array_equal(w.grid_variables("kernel")[0].numpy(), np.ones((1, 4), np.float32))
    assert not w.grid_variables("kernel")[0].trainable


def test_a_model_with_quantizers_saves_and_loads_without_custom_objects(tmp_path):
    x = keras.Input((3,))
    q = ActivationQuantizer(n_bits=8, qmin=0, qmax=255, method="uniform", signed=False, name="q")
    w = QuantizeWrapper(keras.layers.Dense(4, name="d"), kind="dense", name="quant_d", kernel_quantizers={
        "kernel": {"n_bits": 8, "qmin": -127, "qmax": 127, "method": "symmetric", "axes": [1]}})  # fmt: skip
    model = keras.Model(x, w(q(x)))
    q.scale.assign(0.05)
    q.zero_point.assign(7.0)
    w.grid_variables("kernel")[0].assign(np.full((1, 4), 0.01, np.float32))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for a, b in zip(model.weights, loaded.weights, strict=True):
        assert np.array_equal(a.numpy(), b.numpy())
    assert [v.path for v in loaded.get_layer("q").weights] == ["q/scale", "q/zero_point"]
    assert float(loaded.get_layer("q").zero_point.numpy()) == 7.0
    data = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(data, verbose=0), loaded.predict(data, verbose=0))
