"""Mixed precision end to end: targets respected, errors clear, overwrite and manual bits honoured."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import accuracy

import kerasq
from kerasq.core import (
    BitWidthConfig,
    CoreConfig,
    MixedPrecisionQuantizationConfig,
    QuantizationConfig,
    QuantizationErrorMethod,
    ResourceUtilization,
)
from kerasq.mixed_precision.budget_search import keras_accuracy_target_search
from kerasq.mixed_precision.solver import InfeasibleTargetError

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
