"""Mixed-precision targets and the accuracy-target search: negative, NaN, infeasible or mistyped budgets and
overwrites are refused, naming the resource or argument and the value that would work."""

from __future__ import annotations

import math

import pytest
from bad_input.matrix import Case, check, images, params, tiny_model

import kerasq
from kerasq.budget_search import keras_accuracy_target_search
from kerasq.core import CoreConfig, MixedPrecisionQuantizationConfig, ResourceUtilization
from kerasq.errors import ConfigError, DataError
from kerasq.mixed_precision.solver import InfeasibleTargetError

ptq = kerasq.ptq.keras_post_training_quantization
RU = ResourceUtilization


def _target(target) -> Case:
    return lambda: ptq(tiny_model(), images(), target_resource_utilization=target)


def _overwrite(overwrite) -> Case:
    core = CoreConfig(
        mixed_precision_config=MixedPrecisionQuantizationConfig(configuration_overwrite=overwrite)
    )
    return lambda: ptq(tiny_model(), images(), core_config=core)


def _search(**kwargs) -> Case:
    kwargs.setdefault("target_output_distance", 0.1)
    return lambda: keras_accuracy_target_search(tiny_model(), images(), **kwargs)


CASES = [
    Case(
        "target weights_memory=-1",
        lambda: RU(weights_memory=-1),
        (r"ResourceUtilization\.weights_memory", ">= 0"),
    ),
    Case("target bops=NaN", lambda: RU(bops=math.nan), (r"ResourceUtilization\.bops",)),
    Case(
        "target total_memory='1MB'", lambda: RU(total_memory="1MB"), (r"ResourceUtilization\.total_memory",)
    ),
    Case(
        "target weights_memory=1 (infeasible)",
        _target(RU(weights_memory=1)),
        ("weights_memory budget 1 ", "raise the weights_memory budget to at least"),
    ),
    Case(
        "target activation_memory=1 (infeasible)",
        _target(RU(activation_memory=1)),
        ("activation_memory budget",),
    ),
    Case("target bops=1 (infeasible)", _target(RU(bops=1)), ("bops budget",)),
    Case("target=object()", _target(object()), ("target_resource_utilization", "ResourceUtilization")),
    Case(
        "target={'weights_memory': 100}", _target({"weights_memory": 100}), ("target_resource_utilization",)
    ),
    Case("target=200_000", _target(200_000), ("target_resource_utilization", "int")),
    Case(
        "configuration_overwrite=[0] (too short)",
        _overwrite([0]),
        (r"configuration_overwrite has 1 entries", "configurable units"),
    ),
    Case(
        "configuration_overwrite=[7, 0, ...] (index out of range)",
        _overwrite([7, 0, 0, 0, 0, 0]),
        (r"configuration_overwrite\[0\]=7", "pixels", r"index in 0\.\.2"),
    ),
    Case("search(resource='flops')", _search(resource="flops"), ("resource", "'flops'")),
    Case("search(resource=None)", _search(resource=None), ("resource",)),
    Case(
        "search(no target)",
        _search(target_output_distance=None),
        ("max_accuracy_drop", "target_output_distance"),
    ),
    Case(
        "search(two targets)",
        _search(max_accuracy_drop=1.0, evaluate_fn=lambda m: 1.0),
        ("exactly one target",),
    ),
    Case(
        "search(max_accuracy_drop, no evaluate_fn)",
        _search(target_output_distance=None, max_accuracy_drop=1.0),
        ("evaluate_fn",),
    ),
    Case(
        "search(evaluate_fn=3)",
        _search(target_output_distance=None, max_accuracy_drop=1.0, evaluate_fn=3),
        ("evaluate_fn",),
    ),
    Case(
        "search(max_accuracy_drop=NaN)",
        _search(target_output_distance=None, max_accuracy_drop=math.nan, evaluate_fn=lambda m: 1.0),
        ("max_accuracy_drop",),
    ),
    Case(
        "search(max_accuracy_drop=-1)",
        _search(target_output_distance=None, max_accuracy_drop=-1, evaluate_fn=lambda m: 1.0),
        ("max_accuracy_drop", ">= 0"),
    ),
    Case("search(target_output_distance=0)", _search(target_output_distance=0), ("target_output_distance",)),
    Case(
        "search(target_output_distance=NaN)",
        _search(target_output_distance=math.nan),
        ("target_output_distance",),
    ),
    Case(
        "search(target_output_distance='5%')",
        _search(target_output_distance="5%"),
        ("target_output_distance",),
    ),
    Case("search(relative_tolerance=0)", _search(relative_tolerance=0), ("relative_tolerance",)),
    Case("search(relative_tolerance='2%')", _search(relative_tolerance="2%"), ("relative_tolerance",)),
    Case(
        "resource_utilization_data(core_config='x')",
        lambda: kerasq.core.keras_resource_utilization_data(tiny_model(), None, "x"),
        ("core_config",),
        owner="ptq.py",
        reason="_check_arguments raises a builtin ValueError",
    ),
    Case(
        "resource_utilization_data(representative_data_gen=wrong shape)",
        lambda: kerasq.core.keras_resource_utilization_data(tiny_model(), images(4, (5, 5, 3))),
        ("'pixels'",),
        owner="kerasq/data (representative.py)",
        reason="raises a builtin ValueError",
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_mixed_precision_target(case):
    err = check(case)
    assert isinstance(err, DataError if "representative_data_gen" in case.id else ConfigError)


def test_infeasible_target_is_a_config_error_with_the_numbers():
    with pytest.raises(InfeasibleTargetError) as info:
        _target(RU(weights_memory=1))()
    err = info.value
    assert err.resource == "weights_memory" and err.requested == 1 and err.reachable > 1
    assert isinstance(err, ConfigError) and isinstance(err, ValueError)
