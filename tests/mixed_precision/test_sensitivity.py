"""Sensitivity: the downstream-only recomputation equals a full re-run of the quantized model."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
from scipy.stats import spearmanr

import kerasq
from kerasq.builder import build_model
from kerasq.core import CoreConfig, MixedPrecisionQuantizationConfig, MpDistanceWeighting, ResourceUtilization
from kerasq.mixed_precision import sensitivity
from kerasq.mixed_precision.sensitivity import (
    compute_sensitivity,
    interest_points,
    point_weights,
    search_candidate_grids,
)
from kerasq.mixed_precision.units import apply_bits, configurable_units
from kerasq.params import grid_cache
from kerasq.params.grid_cache import GridCache
from kerasq.pipeline import prepare


@pytest.fixture(scope="module")
def prepared(trained_cnn, calibration):
    return prepare(trained_cnn, calibration[:256], None, None)


def _weighted_distance(graph, plan, grids, samples, weights):
    """Full re-run: the quantized model built for ``plan``, distance at every interest point."""
    points = interest_points(graph, plan)
    quantized = build_model(graph, plan, grids.params_for(plan))
    floats = build_model(graph)
    probe_q = keras.Model(quantized.model.inputs, [_consumed(quantized, t) for t, _ in points])
    probe_f = keras.Model(floats.model.inputs, [floats.tensors[t] for t, _ in points])
    dist = []
    for q, f in zip(probe_q.predict(samples, verbose=0), probe_f.predict(samples, verbose=0), strict=True):
        q, f = np.asarray(q, np.float64).reshape(len(q), -1), np.asarray(f, np.float64).reshape(len(f), -1)
        dist.append(np.mean(np.sum((q - f) ** 2, 1) / (np.sum(f**2, 1) + 1e-12)))
    return float(np.asarray(dist) @ weights)


def _consumed(built, tensor):
    """The tensor after its activation quantizer (what consumers read)."""
    for layer in built.model.layers:
        if isinstance(layer, kerasq.ActivationQuantizer) and layer.input is built.tensors[tensor]:
            return layer.output
    return built.tensors[tensor]


def _count_calls(monkeypatch) -> list[int]:
    """``_Executor._call`` counted into the last entry of the returned list (append a 0 to start a count);
    under a lock, since units are measured on several threads."""
    calls: list[int] = []
    call = sensitivity._Executor._call
    lock = threading.Lock()

    def counted(self, node, values):
        with lock:
            calls[-1] += 1
        return call(self, node, values)

    monkeypatch.setattr(sensitivity._Executor, "_call", counted)
    return calls


def test_matches_full_rerun(prepared, monkeypatch):
    monkeypatch.setattr(sensitivity, "WINDOW", None)  # every downstream point recomputed
    graph, plan, grids = prepared.graph, prepared.plan, prepared.grids
    units = configurable_units(graph, plan)
    kinds = {u.kind for u in units}
    assert kinds == {"weights", "activation"}
    samples = prepared.data.take(16)
    sens = compute_sensitivity(graph, plan, units, grids, samples, MixedPrecisionQuantizationConfig())
    top = [u.candidates[0] for u in units]
    reference = _weighted_distance(graph, apply_bits(plan, units, top), grids, samples, sens.point_weights)
    assert sens.reference_distance == pytest.approx(reference, rel=1e-4)
    checked = 0
    for i, unit in enumerate(units):
        if unit.name not in ("conv2", "pw", "classifier", "image", "relu1", "add"):
            continue
        for c in range(1, len(unit.candidates)):
            bits = list(top)
            bits[i] = unit.candidates[c]
            full = _weighted_distance(
                graph, apply_bits(plan, units, bits), grids, samples, sens.point_weights
            )
            assert sens.values[i][c] == pytest.approx(full - reference, rel=1e-3, abs=1e-7), (unit, c)
            checked += 1
    assert checked >= 8
    # fewer bits hurt more
    for values in sens.values:
        assert values[0] == 0
        assert values[-1] > 0


def test_point_weights():
    labels = ["a", "b", "c", "d"]
    out = np.array([False, False, False, True])
    np.testing.assert_allclose(point_weights(MpDistanceWeighting.AVG, labels, out, 0.25), 0.25)
    np.testing.assert_allclose(point_weights(MpDistanceWeighting.LAST_LAYER, labels, out, 0.25), [0, 0, 0, 1])
    exp = point_weights(MpDistanceWeighting.EXP, labels, out, 0.25)
    assert np.all(np.diff(exp) > 0) and exp.sum() == pytest.approx(1)
    hess = point_weights(MpDistanceWeighting.HESSIAN, labels, out, 0.25, np.array([1.0, 1.0, 2.0, 4.0]))
    np.testing.assert_allclose(hess, [0.125, 0.125, 0.25, 0.5])


def _decoder() -> keras.Model:
    """Four 8-channel convs then a wide ReLU head: the head's output dominates activation memory."""
    keras.utils.set_random_seed(1)
    layers = keras.layers
    x = inputs = keras.Input((16, 16, 3), name="img")
    for k in range(4):
        x = layers.Conv2D(8, 3, padding="same", activation="relu", name=f"c{k}")(x)
    return keras.Model(inputs, layers.Conv2D(32, 1, activation="relu", name="head")(x))


def test_last_layer_weighting_protects_the_output():
    """The seed's trouble situation: AVG drops the last layer's activation bits, LAST_LAYER keeps them."""
    model = _decoder()
    x = np.random.default_rng(0).normal(size=(64, 16, 16, 3)).astype("float32")
    ru = kerasq.core.keras_resource_utilization_data(model, x)
    target = ResourceUtilization(activation_memory=ru.activation_memory - 1024)
    bits, errors = {}, {}
    for method in (MpDistanceWeighting.AVG, MpDistanceWeighting.LAST_LAYER):
        core = CoreConfig(
            mixed_precision_config=MixedPrecisionQuantizationConfig(distance_weighting_method=method)
        )
        q, info = kerasq.ptq.keras_post_training_quantization(model, x, target, core_config=core)
        assert info.resource_utilization.activation_memory <= target.activation_memory
        bits[method] = dict(zip(info.mixed_precision.units, info.mixed_precision.bits, strict=True))
        f, y = model.predict(x, verbose=0), q.predict(x, verbose=0)
        errors[method] = float(np.sum((y - f) ** 2) / np.sum(f**2))
    assert bits[MpDistanceWeighting.AVG]["head_activation (activation)"] == 4
    assert bits[MpDistanceWeighting.LAST_LAYER]["head_activation (activation)"] == 8
    assert errors[MpDistanceWeighting.LAST_LAYER] < errors[MpDistanceWeighting.AVG]


def test_joint_check_measures_the_model_ptq_builds(prepared, trained_cnn):
    """The joint check (``Sensitivity.joint_distance``, which ``_best_of`` ranks candidates by) runs the model
    PTQ returns (biases corrected for the candidate's grids, as ``finish`` corrects them) and measures it at
    the model outputs."""
    graph, plan, grids = prepared.graph, prepared.plan, prepared.grids
    assert prepared.input_means  # bias correction is on by default
    units = configurable_units(graph, plan, activations=False)
    samples = prepared.data.take(16)
    mp = MixedPrecisionQuantizationConfig()  # AVG: the joint check still measures at the outputs
    sens = compute_sensitivity(graph, plan, units, grids, samples, mp, prepared.input_means)
    mixed = apply_bits(plan, units, [u.candidates[-1 - i % 2] for i, u in enumerate(units)])  # 2 and 4 bits
    quantized, _ = kerasq.pipeline.finish(prepared, mixed)
    f = np.asarray(trained_cnn.predict(samples, verbose=0), np.float64)
    q = np.asarray(quantized.predict(samples, verbose=0), np.float64)
    expected = np.mean(np.sum((q - f) ** 2, 1) / np.sum(f**2, 1))
    kernels = prepared.compensation.kernels(grids.params_for(mixed))
    assert kernels  # the 2- and 4-bit kernels are compensated, as finish compensates them
    assert sens.joint_distance(graph, mixed, grids, kernels) == pytest.approx(expected, rel=1e-4)


def _uneven_branches() -> keras.Model:
    """Two equal branches added, branch "quiet" scaled by 0.01 before the add: its activations barely reach
    the output."""
    layers = keras.layers
    keras.utils.set_random_seed(2)
    x = inputs = keras.Input((12,), name="x")
    ends = []
    for name in ("loud", "quiet"):
        h = layers.Dense(16, activation="relu", name=f"{name}_hidden")(x)
        ends.append(layers.Dense(8, name=f"{name}_out")(h))
    model = keras.Model(inputs, layers.Add(name="add")(ends))
    kernel, bias = model.get_layer("quiet_out").get_weights()
    model.get_layer("quiet_out").set_weights([kernel * 0.01, bias * 0.01])
    return model


def test_hessian_weighting_discounts_what_barely_reaches_the_output():
    model = _uneven_branches()
    data = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
    prepared = prepare(model, data, None, None)
    graph, plan, grids = prepared.graph, prepared.plan, prepared.grids
    units = configurable_units(graph, plan)
    index = {u.label: i for i, u in enumerate(units)}
    samples = prepared.data.take(32)
    ratio = {}
    for method in (MpDistanceWeighting.AVG, MpDistanceWeighting.HESSIAN):
        mp = MixedPrecisionQuantizationConfig(distance_weighting_method=method)
        sens = compute_sensitivity(graph, plan, units, grids, samples, mp, prepared.input_means)
        quiet = sens.values[index["quiet_hidden_activation (activation)"]][-1]
        loud = sens.values[index["loud_hidden_activation (activation)"]][-1]
        ratio[method] = quiet / loud
        if method is MpDistanceWeighting.HESSIAN:
            w = dict(zip(sens.interest_points, sens.point_weights, strict=True))
            assert w["quiet_hidden_activation"] < 1e-3 * w["loud_hidden_activation"]
    assert 0.3 < ratio[MpDistanceWeighting.AVG] < 3  # AVG: both hidden layers' own distances count alike
    assert ratio[MpDistanceWeighting.HESSIAN] < 0.01  # HESSIAN: quiet's error is 0.01x at the output


def _dense_chain(depth: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((8,), name="x")
    for k in range(depth):
        x = keras.layers.Dense(8, activation="relu", name=f"d{k}")(x)
    return keras.Model(inputs, x)


def test_work_grows_linearly_with_depth(monkeypatch):
    """Each unit recomputes at most ``WINDOW`` interest points downstream, so every 12 more layers cost the
    same number of node evaluations (recomputing everything downstream, 1.67x more from 24 to 36 layers than
    from 12 to 24)."""
    calls = _count_calls(monkeypatch)
    data = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    for depth in (12, 24, 36):
        prepared = prepare(_dense_chain(depth), data, None, None)
        units = configurable_units(prepared.graph, prepared.plan, activations=False)
        calls.append(0)
        compute_sensitivity(
            prepared.graph, prepared.plan, units, prepared.grids, [data], MixedPrecisionQuantizationConfig()
        )
    assert (calls[2] - calls[1]) / (calls[1] - calls[0]) < 1.1


def test_window_keeps_the_ranking_of_the_full_recompute(prepared, monkeypatch):
    """Beyond the window a unit's distance increase is carried to every later point it reaches: on the trained
    CNN, a window of 2 interest points ranks the (unit, candidate) pairs as the full recompute does."""
    graph, plan, grids = prepared.graph, prepared.plan, prepared.grids
    units = configurable_units(graph, plan)
    samples = prepared.data.take(16)
    ranked = {}
    for window in (None, 2):
        monkeypatch.setattr(sensitivity, "WINDOW", window)
        sens = compute_sensitivity(graph, plan, units, grids, samples, MixedPrecisionQuantizationConfig())
        ranked[window] = np.concatenate([v[1:] for v in sens.values])
    # measured 0.974 (values up to 88% off where a point far downstream carries the last measured increase)
    assert spearmanr(ranked[None], ranked[2])[0] > 0.95


def test_beyond_the_window_only_points_the_unit_reaches_change(monkeypatch):
    """With a window of one point, a unit's increase is carried to the later points downstream of it (its
    branch's output and the add), never to the parallel branch's points."""
    monkeypatch.setattr(sensitivity, "WINDOW", 1)
    model = _uneven_branches()
    data = np.random.default_rng(0).normal(size=(32, 12)).astype("float32")
    prepared = prepare(model, data, None, None)
    units = configurable_units(prepared.graph, prepared.plan)
    sens = compute_sensitivity(
        prepared.graph, prepared.plan, units, prepared.grids, [data], MixedPrecisionQuantizationConfig()
    )
    for side, other in (("loud", "quiet"), ("quiet", "loud")):
        u = next(i for i, unit in enumerate(units) if unit.label == f"{side}_hidden_activation (activation)")
        increase = dict(zip(sens.interest_points, sens.increases[u][-1], strict=True))
        assert increase[f"{side}_hidden_activation"] > 0
        assert increase["add"] == increase[f"{side}_hidden_activation"]  # carried on
        assert all(v == 0 for k, v in increase.items() if k.startswith(other))


def test_candidate_grids_are_searched_before_the_sensitivity(prepared, monkeypatch):
    """``search_candidate_grids`` (timed as ``grids``) searches every grid the sensitivity and the joint check
    read, so neither searches one (their seconds hold no grid search, as MCT's ``search_bit_width``)."""
    graph, plan, old = prepared.graph, prepared.plan, prepared.grids
    grids = GridCache(graph, old.stats, old.qc, old.importance)  # empty: the module's cache is warm
    units = configurable_units(graph, plan)
    searched = []
    for name in ("weight_params", "activation_params"):
        real = getattr(grid_cache, name)
        monkeypatch.setattr(
            grid_cache, name, lambda *a, _real=real, _name=name, **k: searched.append(_name) or _real(*a, **k)
        )
    search_candidate_grids(plan, units, grids)
    assert {"weight_params", "activation_params"} <= set(searched)
    searched.clear()
    samples = prepared.data.take(8)
    sens = compute_sensitivity(
        graph, plan, units, grids, samples, MixedPrecisionQuantizationConfig(), prepared.input_means
    )
    for k in range(1, 3):
        lowest = apply_bits(plan, units, [u.candidates[min(k, len(u.candidates) - 1)] for u in units])
        sens.joint_distance(graph, lowest, grids)
    assert searched == []


def test_sensitivity_and_joint_check_build_no_model(prepared, monkeypatch):
    """The executor runs copies of the graph's layers: no Keras model is built for the float values, the
    reference or a joint configuration (each build cost 1.4 s on the pretrained CIFAR-10 CNN)."""

    def refuse(*args, **kwargs):
        raise AssertionError("build_model called")

    monkeypatch.setattr(sensitivity, "build_model", refuse)
    graph, plan, grids = prepared.graph, prepared.plan, prepared.grids
    units = configurable_units(graph, plan)
    sens = compute_sensitivity(
        graph,
        plan,
        units,
        grids,
        prepared.data.take(8),
        MixedPrecisionQuantizationConfig(),
        prepared.input_means,
    )
    assert all(v[-1] > 0 for v in sens.values)
    assert sens.joint_distance(graph, apply_bits(plan, units, [u.candidates[-1] for u in units]), grids) > 0


def _shared_dense() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((16,), name="x")
    shared = keras.layers.Dense(16, name="shared")
    h = shared(keras.layers.Dense(16, activation="relu", name="pre")(x))
    y = shared(keras.layers.ReLU(name="mid")(h))
    return keras.Model(x, keras.layers.Dense(4, name="head")(y))


@pytest.mark.parametrize("bits", [2, 4])
def test_joint_check_of_a_shared_layer_measures_the_model_ptq_builds(bits):
    """A layer called twice has one kernel (its first call's grid) and one bias (its first call's correction,
    though each call has its own mean input): the joint check runs it so, as the model PTQ returns."""
    data = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    prepared = prepare(_shared_dense(), data, None, None)
    assert {"shared", "shared_call1"} <= set(prepared.input_means)
    graph, plan, grids = prepared.graph, prepared.plan, prepared.grids
    units = configurable_units(graph, plan)
    samples = prepared.data.take(32)
    sens = compute_sensitivity(
        graph, plan, units, grids, samples, MixedPrecisionQuantizationConfig(), prepared.input_means
    )
    mixed = apply_bits(
        plan, units, [bits if u.label == "shared (weights)" else u.candidates[0] for u in units]
    )
    quantized, _ = kerasq.pipeline.finish(prepared, mixed)
    f = np.asarray(prepared.model.predict(samples, verbose=0), np.float64)
    q = np.asarray(quantized.predict(samples, verbose=0), np.float64)
    expected = np.mean(np.sum((q - f) ** 2, 1) / np.sum(f**2, 1))
    assert sens.joint_distance(graph, mixed, grids) == pytest.approx(expected, rel=1e-5)


def test_activation_units_reuse_the_reference_output_before_its_quantizer(prepared, monkeypatch):
    """An activation unit's candidates quantize its producer's reference output as it was before the reference
    quantizer: no producer is recomputed for it (one ``_call`` fewer per activation unit whose producer nothing
    upstream changes), and every sensitivity equals the one with the producer recomputed."""
    graph, plan, grids = prepared.graph, prepared.plan, prepared.grids
    units = configurable_units(graph, plan)
    samples = prepared.data.take(16)
    config = MixedPrecisionQuantizationConfig()
    reference = sensitivity._Executor.reference
    calls = _count_calls(monkeypatch)
    results = []
    for keep in (True, False):
        if not keep:  # the reference keeps nothing: variants recompute every producer
            monkeypatch.setattr(
                sensitivity._Executor, "reference", lambda self, x, keep=(): reference(self, x)
            )
        calls.append(0)
        results.append(compute_sensitivity(graph, plan, units, grids, samples, config).values)
    producers = graph.producers()
    reused = sum(u.kind == "activation" and u.tensor in producers for u in units)
    assert reused >= 3
    assert calls[1] - calls[0] == reused
    for kept, recomputed in zip(*results, strict=True):
        np.testing.assert_allclose(kept, recomputed, rtol=1e-12, atol=0)
