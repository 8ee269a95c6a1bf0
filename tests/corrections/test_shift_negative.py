"""Shift-negative correction in the pipeline: which activations shift, and the error it saves."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasq
from kerasq.core import BitWidthConfig, CoreConfig, QuantizationConfig
from kerasq.layers import ShiftedActivation


def _swish_net() -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = keras.layers
    x = inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(16, 3, padding="same", name="c1")(x)
    x = layers.Activation("swish", name="s1")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="c2")(x)
    x = layers.Activation("swish", name="s2")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(10, name="logits")(x))
    for name in ("c1", "c2"):  # swish outputs up to ~10, so the -0.28 tail is small (ratio <= 0.05)
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([kernel * 12.0, bias])
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, size=(512, 12, 12, 3)).astype("float32"), rng.uniform(
        0, 1, size=(256, 12, 12, 3)
    ).astype("float32")


def _error(model, quantized, x):
    f = model.predict(x, verbose=0)
    return float(np.mean((quantized.predict(x, verbose=0) - f) ** 2) / np.mean(f**2))


@pytest.mark.parametrize("bits, recalculate", [(8, False), (6, True), (4, False)])
def test_snc_lowers_the_output_error_of_a_swish_network(data, bits, recalculate):
    model = _swish_net()
    calibration, test = data
    errors, infos = {}, {}
    for snc in (False, True):
        core = _pinned(
            bits, shift_negative_activation_correction=snc, shift_negative_threshold_recalculation=recalculate
        )
        q, infos[snc] = kerasq.ptq.keras_post_training_quantization(model, calibration, core_config=core)
        errors[snc] = _error(model, q, test)
    assert errors[True] < 0.5 * errors[False]  # measured: 3.3x (8 bits), 5.1x (6, recalculated), 2.0x (4)
    for name in ("s1", "s2"):
        assert infos[False].layers[name].activation.signed
        assert not infos[True].layers[name].activation.signed  # one more bit on the values that occur
    assert sum(isinstance(layer, ShiftedActivation) for layer in q.layers) == 2


def test_shift_respects_the_ratio_and_the_platform(data):
    model = _swish_net()
    calibration, _ = data
    strict = QuantizationConfig(shift_negative_activation_correction=True, shift_negative_ratio=0.0)
    _, info = kerasq.ptq.keras_post_training_quantization(model, calibration, core_config=CoreConfig(strict))
    assert info.layers["s1"].activation.signed  # ratio 0: no tail is small enough
    tflite = kerasq.get_target_platform_capabilities("tflite")
    qc = QuantizationConfig(shift_negative_activation_correction=True)
    _, info = kerasq.ptq.keras_post_training_quantization(
        model, calibration, core_config=CoreConfig(qc), target_platform_capabilities=tflite
    )
    assert any("shift_negative_activation_correction skipped" in w for w in info.warnings)


def _pinned(bits: int, **snc) -> CoreConfig:
    """Swish outputs at ``bits``, everything else at 16 bits."""
    qc = QuantizationConfig(activation_n_bits=16, weights_n_bits=16, **snc)
    return CoreConfig(
        qc, bit_width_config=BitWidthConfig().set_manual_activation_bit_width(bits, name_regex="s[12]")
    )


def test_recalculation_and_search_options(data):
    model = _swish_net()
    calibration, test = data
    q, _ = kerasq.ptq.keras_post_training_quantization(
        model, calibration, core_config=_pinned(4, shift_negative_activation_correction=False)
    )
    baseline = _error(model, q, test)
    for recalc, search in ((False, False), (True, False), (True, True)):
        core = _pinned(4, shift_negative_activation_correction=True, shift_negative_threshold_recalculation=recalc,
                       shift_negative_params_search=search)  # fmt: skip
        q, info = kerasq.ptq.keras_post_training_quantization(model, calibration, core_config=core)
        assert not info.layers["s1"].activation.signed
        assert _error(model, q, test) < 0.6 * baseline


def test_saved_model_with_shifted_activations_loads(data, tmp_path):
    model = _swish_net()
    calibration, test = data
    qc = QuantizationConfig(shift_negative_activation_correction=True)
    q, _ = kerasq.ptq.keras_post_training_quantization(model, calibration, core_config=CoreConfig(qc))
    q.save(tmp_path / "snc.keras")
    loaded = keras.models.load_model(tmp_path / "snc.keras")
    np.testing.assert_array_equal(loaded.predict(test[:16], verbose=0), q.predict(test[:16], verbose=0))


def test_bias_correction_means_of_shifted_inputs_are_those_of_the_corrected_graph(data):
    # One statistics pass serves bias correction too: the mean input of a reader of a shifted activation is
    # derived (zero padded like the activation, plus the shift), not measured again on the rewritten graph.
    from kerasq.builder import build_model
    from kerasq.data import RepresentativeData, input_specs_from_model
    from kerasq.pipeline import prepare

    model = _swish_net()
    calibration, _ = data
    prepared = prepare(model, calibration, CoreConfig(), None)
    shifted = {n.name for n in prepared.graph.nodes if isinstance(n.op, ShiftedActivation)}
    assert shifted == {"s1", "s2"}
    built = build_model(prepared.graph)
    names = sorted(prepared.input_means)
    probe = keras.Model(built.model.inputs, [built.tensors[prepared.graph.node(n).inputs[0]] for n in names])
    reps = RepresentativeData(calibration, input_specs_from_model(model))
    measured = [np.mean(np.concatenate([np.asarray(o) for o in outs]), axis=0) for outs in
                zip(*[keras.tree.flatten(probe([b[0]], training=False)) for b in reps], strict=True)]  # fmt: skip
    assert {"c2", "dw"} <= set(names)  # the readers of s1 and s2 (with their padding moved into the shift)
    for name, want in zip(names, measured, strict=True):
        np.testing.assert_allclose(prepared.input_means[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
