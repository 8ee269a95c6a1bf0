"""Mixed precision end to end: targets respected, errors clear, overwrite and manual bits honoured."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from helpers import accuracy

import kerasq
from kerasq.budget_search import keras_accuracy_target_search
from kerasq.core import (
    BitWidthConfig,
    CoreConfig,
    MixedPrecisionQuantizationConfig,
    QuantizationConfig,
    QuantizationErrorMethod,
    ResourceUtilization,
)
from kerasq.mixed_precision import bit_allocation
from kerasq.mixed_precision.bit_allocation import BitAllocator
from kerasq.mixed_precision.solver import InfeasibleTargetError, MixedPrecisionProblem, evaluate, solve
from kerasq.pipeline import allocation_inputs, prepare
from kerasq.resources.utilization import resource_utilization

ptq = kerasq.ptq.keras_post_training_quantization


@pytest.fixture(scope="module")
def default_ru(trained_cnn):
    return kerasq.core.keras_resource_utilization_data(trained_cnn)


@pytest.fixture(scope="module")
def test_slice(cifar):
    return cifar[2][:1000], cifar[3][:1000]


def _output_error(model, reference, x):
    f = reference.predict(x, verbose=0)
    return float(np.sum((model.predict(x, verbose=0) - f) ** 2) / np.sum(f**2))


def test_at_the_size_of_uniform_4_bit_mixed_precision_is_at_least_as_close_to_float(
    trained_cnn, calibration, test_slice
):
    uniform, uinfo = ptq(
        trained_cnn, calibration, core_config=CoreConfig(QuantizationConfig(weights_n_bits=4))
    )
    target = ResourceUtilization(weights_memory=uinfo.resource_utilization.weights_memory)
    q, info = ptq(trained_cnn, calibration, target)
    assert info.resource_utilization.weights_memory <= target.weights_memory
    assert info.mixed_precision.target == target
    x, y = test_slice
    assert accuracy(trained_cnn, x, y) - accuracy(q, x, y) < 3.0
    assert _output_error(q, trained_cnn, x) <= 1.05 * _output_error(uniform, trained_cnn, x)


def test_half_of_8_bit_size(trained_cnn, calibration, default_ru, test_slice):
    """Below uniform 4-bit's size (half the 8-bit kernel bytes) some layers must go to 2 bits: still within
    the budget and usable."""
    target = ResourceUtilization(weights_memory=0.45 * default_ru.weights_memory)
    q, info = ptq(trained_cnn, calibration, target)
    assert info.resource_utilization.weights_memory <= target.weights_memory
    assert 2 in info.mixed_precision.bits and 8 in info.mixed_precision.bits
    x, y = test_slice
    assert accuracy(trained_cnn, x, y) - accuracy(q, x, y) < 10.0


@pytest.mark.parametrize(
    "resource, fraction", [("activation_memory", 0.7), ("bops", 0.5), ("total_memory", 0.6)]
)
def test_every_resource_target_is_respected(trained_cnn, calibration, default_ru, resource, fraction):
    target = ResourceUtilization(**{resource: fraction * getattr(default_ru, resource)})
    _, info = ptq(trained_cnn, calibration, target)
    achieved = getattr(info.resource_utilization, resource)
    assert achieved <= getattr(target, resource)
    assert achieved < getattr(default_ru, resource)


def test_infeasible_target_names_the_resource(trained_cnn, calibration):
    two_bit = CoreConfig(QuantizationConfig(weights_n_bits=2))
    smallest = kerasq.core.keras_resource_utilization_data(trained_cnn, core_config=two_bit).weights_memory
    with pytest.raises(InfeasibleTargetError, match="weights_memory") as err:
        ptq(trained_cnn, calibration, ResourceUtilization(weights_memory=smallest - 100))
    assert err.value.reachable == smallest
    assert err.value.requested == smallest - 100
    assert f"{smallest:,.0f}".replace(",", "") in str(err.value).replace(",", "")


def _overwrite(indices):
    return CoreConfig(
        mixed_precision_config=MixedPrecisionQuantizationConfig(configuration_overwrite=indices)
    )


def test_configuration_overwrite(trained_cnn, calibration, default_ru):
    target = ResourceUtilization(weights_memory=default_ru.weights_memory)  # weights units only
    _, info = ptq(trained_cnn, calibration, target, core_config=_overwrite([0, 1, 2, 0, 1, 2]))
    assert info.mixed_precision.units[0] == "conv1 (weights)"
    assert info.mixed_precision.bits == [8, 4, 2, 8, 4, 2]
    assert info.layers["conv2"].weights["kernel"].n_bits == 4
    assert info.layers["pw"].weights["kernel"].n_bits == 8
    with pytest.raises(ValueError, match="6 configurable units"):
        ptq(trained_cnn, calibration, target, core_config=_overwrite([0, 1]))
    with pytest.raises(ValueError, match=r"configuration_overwrite\[2\]=3 is out of range for dw"):
        ptq(trained_cnn, calibration, target, core_config=_overwrite([0, 0, 3, 0, 0, 0]))
    with pytest.raises(ValueError, match="candidate indices"):
        MixedPrecisionQuantizationConfig(configuration_overwrite=[0, -1])


def test_manual_bit_widths_are_respected_by_ptq_and_search(trained_cnn, calibration, default_ru):
    pins = BitWidthConfig().set_manual_weights_bit_width(2, name="classifier")
    pins.set_manual_activation_bit_width(4, name_regex="relu.*")
    _, info = ptq(trained_cnn, calibration, core_config=CoreConfig(bit_width_config=pins))
    assert info.layers["classifier"].weights["kernel"].n_bits == 2
    assert info.layers["conv1"].weights["kernel"].n_bits == 8
    assert info.layers["relu1"].activation.n_bits == 4
    target = ResourceUtilization(weights_memory=0.6 * default_ru.weights_memory)
    _, info = ptq(trained_cnn, calibration, target, core_config=CoreConfig(bit_width_config=pins))
    assert "classifier (weights)" not in info.mixed_precision.units
    assert info.layers["classifier"].weights["kernel"].n_bits == 2
    assert info.resource_utilization.weights_memory <= target.weights_memory
    bad = BitWidthConfig().set_manual_weights_bit_width(4, layer_type="LSTM")
    with pytest.raises(ValueError, match="matched no layer"):
        ptq(trained_cnn, calibration, core_config=CoreConfig(bit_width_config=bad))


def test_hmse_weights(trained_cnn, calibration, test_slice):
    qc = QuantizationConfig(weights_error_method=QuantizationErrorMethod.HMSE, weights_n_bits=4)
    q_hmse, _ = ptq(trained_cnn, calibration, core_config=CoreConfig(qc))
    q_mse, _ = ptq(trained_cnn, calibration, core_config=CoreConfig(QuantizationConfig(weights_n_bits=4)))
    x, y = test_slice
    assert accuracy(q_hmse, x, y) > accuracy(trained_cnn, x, y) - 6.0
    assert abs(accuracy(q_hmse, x, y) - accuracy(q_mse, x, y)) < 4.0


def test_accuracy_target_search(trained_cnn, calibration, default_ru, test_slice):
    x, y = test_slice
    result = keras_accuracy_target_search(
        trained_cnn, calibration, lambda m: accuracy(m, x[:500], y[:500]), max_accuracy_drop=1.5
    )
    assert result.meets_target
    assert result.float_metric - accuracy(result.model, x[:500], y[:500]) <= 1.5
    assert result.info.resource_utilization.weights_memory <= result.budget < default_ru.weights_memory
    assert result.evaluations <= 9  # bisection: far fewer than one evaluation per candidate per layer
    assert len(result.probes) >= 3


@pytest.mark.parametrize("method", ["exp", "hessian"])
def test_other_distance_weightings(trained_cnn, calibration, default_ru, method):
    mp = MixedPrecisionQuantizationConfig(distance_weighting_method=method, num_of_images=16)
    target = ResourceUtilization(weights_memory=0.5 * default_ru.weights_memory)
    _, info = ptq(trained_cnn, calibration, target, core_config=CoreConfig(mixed_precision_config=mp))
    assert info.resource_utilization.weights_memory <= target.weights_memory
    sensitivity = info.mixed_precision.sensitivity
    assert all(
        s[0] == 0 and s[-1] > 0 for s in sensitivity
    )  # 2 bits always hurts more than the 8-bit reference


def test_activation_budget_met_in_the_order_of_the_solved_widths():
    """x(20) feeds branch A (one Dense, its output ``a`` the only configurable tensor, 25 values) and branch B
    (two Dense, 26 and 25 values), added. At 8 bits B runs first (peak 75 bytes); in that order ``a`` is
    resident with x, b1 and b2's outputs, so even at 2 bits the peak is 71 bytes. Run A first and ``a`` at 2
    bits peaks at 57.25 bytes: a budget of 60 is reachable, and the order found at the highest widths alone
    refused it as below 71."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((20,), name="x")
    a = layers.Dense(25, activation="relu", name="a")(x)
    b = layers.Dense(26, activation="relu", name="b1")(x)
    b = layers.Dense(25, activation="relu", name="b2")(b)
    model = keras.Model(inputs, layers.Add(name="add")([a, b]))
    pins = BitWidthConfig().set_manual_activation_bit_width(8, name="x")
    pins.set_manual_activation_bit_width(8, name_regex="b1.*|b2.*|add")
    core = CoreConfig(bit_width_config=pins)
    data = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
    assert kerasq.core.keras_resource_utilization_data(model, data, core_config=core).activation_memory == 75
    _, info = ptq(model, data, ResourceUtilization(activation_memory=60), core_config=core)
    assert info.mixed_precision.units == ["a_activation (activation)"]
    assert info.mixed_precision.bits == [2]
    assert info.resource_utilization.activation_memory == 57.25
    with pytest.raises(InfeasibleTargetError) as err:
        ptq(model, data, ResourceUtilization(activation_memory=57), core_config=core)
    assert err.value.reachable == 57.25


def _branches_model(n_inputs: int, branches: dict[str, list[int]]) -> keras.Model:
    """x -> one chain of Dense + ReLU per branch (layer ``<branch><k>`` with the given widths) -> Add."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((n_inputs,), name="x")
    ends = []
    for name, widths in branches.items():
        h = x
        for k, width in enumerate(widths):
            h = layers.Dense(width, activation="relu", name=f"{name}{k}")(h)
        ends.append(h)
    return keras.Model(inputs, layers.Add(name="add")(ends))


@pytest.mark.parametrize(
    "n_inputs, branches, table, budget, at_8_bit_order, best",
    [
        # the order best at the lowest widths already holds the best choice
        (11, {"a": [18], "b": [20, 15, 18]}, {"a0": [0, 0.49, 1.4], "b0": [0, 0.29, 1.37]}, 45.48,
         {"a0": 4, "b0": 4}, {"a0": 4, "b0": 8}),
        # neither the order at the highest nor at the lowest widths: the order of a solution found in them
        (16, {"a": [27, 30, 18], "b": [24, 18], "c": [19, 18]},
         {"a0": [0, 0.27, 2.43], "b0": [0, 0.41, 1.67], "c1": [0, 0.01, 0.67]}, 74.64,
         {"a0": 8, "b0": 4, "c1": 8}, {"a0": 8, "b0": 8, "c1": 4}),
    ],
)  # fmt: skip
def test_re_scheduling_at_the_solution_finds_a_cheaper_choice(
    n_inputs, branches, table, budget, at_8_bit_order, best
):
    """Activation units with given sensitivities under an activation budget: the cheapest choice meeting it
    in its own execution order is not found in the order best at 8 bits."""
    model = _branches_model(n_inputs, branches)
    pins = BitWidthConfig().set_manual_activation_bit_width(8, name="x")
    fixed = [
        f"{b}{k}" for b, widths in branches.items() for k in range(len(widths)) if f"{b}{k}" not in table
    ]
    pins.set_manual_activation_bit_width(8, name_regex="|".join([f"{n}.*" for n in fixed] + ["add"]))
    data = np.random.default_rng(0).normal(size=(16, n_inputs)).astype("float32")
    prepared = prepare(model, data, CoreConfig(bit_width_config=pins), None)
    allocator = BitAllocator.create(allocation_inputs(prepared), ["activation_memory"])
    names = [u.name.removesuffix("_activation") for u in allocator.units]
    assert sorted(names) == sorted(table)
    values = [np.array(table[name], np.float64) for name in names]
    allocator.sensitivity = SimpleNamespace(values=values)
    problem = MixedPrecisionProblem(values, allocator.problem.rows, {"activation_memory": budget})

    def bits(choice):
        return {n: u.candidates[c] for n, u, c in zip(names, allocator.units, choice, strict=True)}

    assert bits(solve(problem)) == at_8_bit_order
    choice, own = allocator._solve_rescheduled(problem)
    assert bits(choice) == best
    assert evaluate(own, choice)["activation_memory"] <= budget
    assert resource_utilization(prepared.graph, allocator.plan_for(choice)).activation_memory <= budget


def _mp_against_uniform_4_bit(model, calibration, x) -> tuple[float, list[int]]:
    """Output distance on ``x`` of mixed precision at the budget halfway between uniform 4- and 8-bit kernels,
    divided by that of uniform 4-bit kernels (the best uniform width within that budget); and its bits."""
    four, info4 = ptq(model, calibration, core_config=CoreConfig(QuantizationConfig(weights_n_bits=4)))
    eight = kerasq.core.keras_resource_utilization_data(model).weights_memory
    target = ResourceUtilization(weights_memory=(info4.resource_utilization.weights_memory + eight) / 2)
    mixed, info = ptq(model, calibration, target)
    assert info.resource_utilization.weights_memory <= target.weights_memory
    return _output_error(mixed, model, x) / _output_error(four, model, x), info.mixed_precision.bits


_CLEARLY_BETTER = 0.7  # mixed precision's output distance must be below this fraction of uniform 4-bit's


def test_mixed_precision_beats_uniform_bits_within_the_same_budget(trained_cnn, calibration, test_slice):
    """With honest sensitivities the bytes above uniform 4-bit go where they matter (measured: 0.26x the
    output distance of uniform 4-bit kernels, bits [8, 8, 8, 8, 4, 4])."""
    ratio, bits = _mp_against_uniform_4_bit(trained_cnn, calibration, test_slice[0][:500])
    assert 8 in bits
    assert ratio < _CLEARLY_BETTER


def test_zeroed_sensitivities_lose_that_comparison(trained_cnn, calibration, test_slice, monkeypatch):
    """The comparison above needs the sensitivities: zeroed, the solver has nothing to rank and the joint check
    falls back on uniform 4-bit (measured ratio 1.0), so the criterion above fails."""
    real = bit_allocation.compute_sensitivity

    def zeroed(*args, **kwargs):
        sensitivity = real(*args, **kwargs)
        return dataclasses.replace(sensitivity, values=[np.zeros_like(v) for v in sensitivity.values])

    monkeypatch.setattr(bit_allocation, "compute_sensitivity", zeroed)
    ratio, _ = _mp_against_uniform_4_bit(trained_cnn, calibration, test_slice[0][:500])
    assert ratio >= _CLEARLY_BETTER
