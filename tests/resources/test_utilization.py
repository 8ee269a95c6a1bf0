"""Resource figures against hand computation, and the integer-program rows against direct recomputation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kerasq
from kerasq.core import ResourceUtilization
from kerasq.mixed_precision.resource_rows import resource_rows
from kerasq.mixed_precision.solver import MixedPrecisionProblem, evaluate
from kerasq.mixed_precision.units import apply_bits, configurable_units
from kerasq.pipeline import plan_model
from kerasq.resources.utilization import resource_utilization

L = keras.layers


def _chain() -> keras.Model:
    x = keras.Input((8, 8, 3), name="x")
    y = L.Conv2D(4, 3, padding="same", name="c1")(x)
    y = L.ReLU(name="r1")(y)
    return keras.Model(x, L.Conv2D(2, 1, name="c2")(y))


def _residual() -> keras.Model:
    x = keras.Input((8, 8, 4), name="x")
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(x)
    y = L.Conv2D(4, 3, padding="same", name="b")(y)
    return keras.Model(x, L.ReLU(name="out")(L.Add(name="add")([x, y])))


def _concat() -> keras.Model:
    x = keras.Input((8, 8, 4), name="x")
    y1 = L.Conv2D(8, 1, name="c1")(x)
    y2 = L.Conv2D(2, 1, name="c2")(x)
    return keras.Model(x, L.Concatenate(name="cat")([y1, y2]))


def test_chain_figures_by_hand():
    ru = kerasq.core.keras_resource_utilization_data(_chain())
    # kernels 108 + 8 params at 8 bits; biases do not count (MCT's weights_memory)
    assert ru.weights_memory == 108 + 8
    # input 192 B; conv1+relu fused (its conv output is never stored); relu out 256 B; output 128 B
    assert ru.activation_memory == max(192 + 256, 256 + 128)
    assert ru.total_memory == ru.weights_memory + ru.activation_memory
    assert ru.bops == (108 * 64 + 8 * 64) * 8 * 8


def test_residual_keeps_the_skip_alive():
    ru = kerasq.core.keras_resource_utilization_data(_residual())
    # steps: [a+relu] reads x writes r (x stays live for the add); [b+add+relu] reads r, x writes out
    assert ru.activation_memory == 256 + 256 + 256


def test_concat_live_set():
    ru = kerasq.core.keras_resource_utilization_data(_concat())
    # best order peaks at the concat: y1 (512) + y2 (128) + output (640); x is dead by then
    assert ru.activation_memory == 512 + 128 + 640


def test_weights_memory_at_4_bits():
    core = kerasq.core.CoreConfig(kerasq.core.QuantizationConfig(weights_n_bits=4))
    ru4 = kerasq.core.keras_resource_utilization_data(_chain(), core_config=core)
    assert ru4.weights_memory == (108 + 8) / 2


@pytest.fixture(scope="module")
def trained_plan(trained_cnn):
    graph, plan = plan_model(trained_cnn, None, None, None)
    units = configurable_units(graph, plan)
    rows, _ = resource_rows(graph, plan, units)
    return graph, plan, units, MixedPrecisionProblem([np.zeros(len(u.candidates)) for u in units], rows, {})


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_rows_match_recomputed_figures(trained_plan, data):
    graph, plan, units, problem = trained_plan
    choice = [data.draw(st.integers(0, len(u.candidates) - 1)) for u in units]
    rows = evaluate(problem, choice)
    direct = resource_utilization(
        graph, apply_bits(plan, units, [u.candidates[c] for u, c in zip(units, choice, strict=True)])
    )
    assert rows["weights_memory"] == direct.weights_memory
    assert rows["bops"] == direct.bops
    # the rows use the schedule chosen at the highest widths: never below the re-optimized peak
    assert rows["activation_memory"] >= direct.activation_memory
    assert rows["total_memory"] >= direct.total_memory


def test_resource_utilization_validation():
    with pytest.raises(ValueError, match="weights_memory"):
        ResourceUtilization(weights_memory=-1)
    with pytest.raises(ValueError, match="bops"):
        ResourceUtilization(bops="many")
    assert ResourceUtilization(bops=10).restricted() == {"bops": 10}
