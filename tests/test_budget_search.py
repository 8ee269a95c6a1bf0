"""Accuracy-target search: the lowest budget is probed, the smallest budget that met the target is returned
whatever was probed after it, and the output distance is measured on samples calibration did not see."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasq
from kerasq import budget_search
from kerasq.budget_search import keras_accuracy_target_search
from kerasq.errors import ConfigError


@pytest.fixture(scope="module")
def model() -> keras.Model:
    layers = keras.layers
    keras.utils.set_random_seed(3)
    x = inputs = keras.Input((8, 8, 3), name="image")
    for k, width in enumerate((8, 16, 16)):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{k}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(4, name="head")(x))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(80, 8, 8, 3)).astype("float32")


def kernel_bits(model: keras.Model) -> tuple[int, ...]:
    return tuple(
        layer.kernel_quantizers["kernel"].n_bits
        for layer in model.layers
        if isinstance(layer, kerasq.QuantizeWrapper)
    )


def test_lowest_budget_is_probed_and_returned_when_it_meets_the_target(model, data):
    result = keras_accuracy_target_search(model, data, lambda m: 1.0, max_accuracy_drop=0.5)
    lowest = min(p.budget for p in result.probes)
    assert result.meets_target
    assert result.budget == lowest
    assert set(kernel_bits(result.model)) == {2}  # every kernel at its lowest width
    assert result.info.resource_utilization.weights_memory <= result.budget
    assert result.evaluations == 3  # the float model, the highest and the lowest budget


def test_smallest_budget_that_met_the_target_wins_over_later_probes(model, data):
    """Quality that does not fall monotonically with the budget: a quantized model meets the target when an
    even number of its kernels (but not all) are at 2 bits."""
    seen: dict[tuple[int, ...], bool] = {}

    def evaluate_fn(m: keras.Model) -> float:
        bits = kernel_bits(m)
        seen[bits] = not bits or (bits.count(2) % 2 == 0 and bits.count(2) < len(bits))
        return 1.0 if seen[bits] else 0.0

    result = keras_accuracy_target_search(model, data, evaluate_fn, max_accuracy_drop=0.5)
    met = [p.budget for p in result.probes if p.meets_target]
    assert [p.meets_target for p in result.probes][:2] == [True, False]  # highest and lowest budget
    assert result.meets_target
    assert result.budget == min(met)
    assert result.probes[-1].budget != result.budget  # the search went on below it, without success
    assert seen[kernel_bits(result.model)]
    assert result.info.resource_utilization.weights_memory <= result.budget


def test_output_distance_is_measured_on_samples_calibration_did_not_see(model, data, monkeypatch):
    calibrated, measured = [], []
    prepare, distance = budget_search.prepare, budget_search._relative_l2

    def spy_prepare(m, representative, *args):
        calibrated.append(
            np.concatenate(representative) if isinstance(representative, list) else representative
        )
        return prepare(m, representative, *args)

    def spy_distance(m, reference, samples):
        measured.append(np.concatenate(samples))
        return distance(m, reference, samples)

    monkeypatch.setattr(budget_search, "prepare", spy_prepare)
    monkeypatch.setattr(budget_search, "_relative_l2", spy_distance)
    result = keras_accuracy_target_search(model, data, target_output_distance=0.2)
    assert result.held_out_samples == 16  # a fifth of 80
    seen = {x.tobytes() for x in calibrated[0]}
    assert len(calibrated[0]) == 64
    assert measured and all(len(m) == 16 for m in measured)
    assert not any(x.tobytes() in seen for m in measured for x in m)
    # given held-out data, calibration keeps every representative sample
    calibrated.clear()
    result = keras_accuracy_target_search(
        model, data, target_output_distance=0.2, held_out_data=data[:10] + 1
    )
    assert len(calibrated[0]) == 80 and result.held_out_samples == 10
    with pytest.raises(ConfigError, match="held_out_data"):
        keras_accuracy_target_search(model, data, lambda m: 1.0, max_accuracy_drop=1, held_out_data=data)
