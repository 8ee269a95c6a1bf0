"""Every field of every configuration dataclass, out of range or of the wrong type, is refused at construction
with a ``ConfigError`` naming the field."""

from __future__ import annotations

import dataclasses
import math

import pytest
from bad_input.matrix import Case, check, field_ids, params

import kerasq
from kerasq.core import (
    BitWidthConfig,
    CoreConfig,
    ManualBitWidth,
    MixedPrecisionQuantizationConfig,
    QuantizationConfig,
    QuantizationErrorMethod,
    ResourceUtilization,
)
from kerasq.errors import ConfigError
from kerasq.hessian import HessianConfig

NAN, INF = math.nan, math.inf


def _cases(cls, field: str, values, names: tuple[str, ...] | None = None, **fixed) -> list[Case]:
    """One case per bad value of ``cls(field=value, **fixed)``; the message must name ``Class.field``."""
    names = names or (rf"{cls.__name__}\.{field}",)
    return [
        Case(f"{cls.__name__}.{field}={v!r}", lambda v=v: cls(**fixed, **{field: v}), names) for v in values
    ]


QC = QuantizationConfig
MP = MixedPrecisionQuantizationConfig
FLAG_VALUES = ("yes", 1, None)

QUANTIZATION_CONFIG = [
    *_cases(QC, "activation_error_method", ["median", 3, QuantizationErrorMethod.HMSE]),
    *_cases(QC, "weights_error_method", ["msee", None]),
    *_cases(QC, "l_p_value", [0, -1, NAN, INF, "2", True]),
    *_cases(QC, "weights_per_channel", ["yes", 1]),
    *_cases(QC, "activation_n_bits", [1, 17, 8.0, True]),
    *_cases(QC, "weights_n_bits", [0, 32, "8"]),
    *_cases(QC, "num_histogram_bins", [10, 66, 4096.0, True]),
    *_cases(QC, "z_threshold", [0, -1, NAN, "5"]),
    *_cases(QC, "shift_negative_ratio", [-0.1, 1, NAN, "0.05"]),
    *[
        case
        for flag in (
            "weights_bias_correction",
            "weights_compensated_rounding",
            "shift_negative_activation_correction",
            "shift_negative_threshold_recalculation",
            "shift_negative_params_search",
            "concat_threshold_update",
            "linear_collapsing",
            "residual_collapsing",
            "relu_bound_to_power_of_2",
        )  # fmt: skip
        for case in _cases(QC, flag, FLAG_VALUES)
    ],
]

MIXED_PRECISION_CONFIG = [
    *_cases(MP, "num_of_images", [0, -3, 2.5, True]),
    *_cases(MP, "distance_weighting_method", ["median", 2]),
    *_cases(MP, "use_hessian_based_scores", ["yes", 1]),
    *_cases(MP, "exp_distance_weighting_sigma", [0, -1, NAN, "1"]),
    *_cases(MP, "configuration_overwrite", [[-1], "012", [1.5], 3, [True]]),
    *_cases(MP, "refine_after_solve", ["no", None]),
]

MANUAL_BITS = [
    *_cases(ManualBitWidth, "bits", [1, 17, 4.0], name="conv"),
    *_cases(ManualBitWidth, "target", ["both", None], bits=4, name="conv"),
    *_cases(ManualBitWidth, "name", [3, ["conv"]], bits=4),
    *_cases(ManualBitWidth, "name_regex", ["(", 3], bits=4),
    *_cases(ManualBitWidth, "layer_type", [3, 2.5], bits=4),
    Case("ManualBitWidth(no selector)", lambda: ManualBitWidth(4), ("selector", "name=")),
    Case(
        "ManualBitWidth(two selectors)",
        lambda: ManualBitWidth(4, name="a", layer_type="Dense"),
        ("selector",),
    ),
    *_cases(BitWidthConfig, "rules", [[object()], "rules", (ManualBitWidth(4, name="a"),)]),
    Case(
        "BitWidthConfig.set_manual_weights_bit_width(nam=)",
        lambda: BitWidthConfig().set_manual_weights_bit_width(4, nam="conv"),
        ("'nam'", "name="),
    ),
    Case(
        "BitWidthConfig.set_manual_activation_bit_width(bits=1)",
        lambda: BitWidthConfig().set_manual_activation_bit_width(1, name="conv"),
        (r"ManualBitWidth\.bits",),
    ),
]

CORE_CONFIG = [
    *_cases(CoreConfig, "quantization_config", [{"l_p_value": 2}, None]),
    *_cases(CoreConfig, "mixed_precision_config", [QC()]),
    *_cases(CoreConfig, "bit_width_config", [[], None]),
    *_cases(CoreConfig, "n_iter", [0, 2.5]),
]

RESOURCES = [
    case
    for field in ("weights_memory", "activation_memory", "total_memory", "bops")
    for case in _cases(ResourceUtilization, field, [-1, NAN, "1MB", True, None])
]

HESSIAN = [
    *_cases(HessianConfig, "max_iterations", [0, 2.5]),
    *_cases(HessianConfig, "min_iterations", [0, True]),
    Case(
        "HessianConfig.min_iterations>max",
        lambda: HessianConfig(min_iterations=9, max_iterations=3),
        (r"HessianConfig\.min_iterations", "max_iterations"),
    ),
    *_cases(HessianConfig, "tolerance", [0, -1e-3, NAN, "1e-3"]),
    *_cases(HessianConfig, "seed", [1.5, None]),
]

CASES = QUANTIZATION_CONFIG + MIXED_PRECISION_CONFIG + MANUAL_BITS + CORE_CONFIG + RESOURCES + HESSIAN


@pytest.mark.parametrize("case", params(CASES))
def test_bad_config(case):
    assert isinstance(check(case), ConfigError)


@pytest.mark.parametrize(
    "cls",
    [
        QuantizationConfig,
        MixedPrecisionQuantizationConfig,
        ManualBitWidth,
        BitWidthConfig,
        CoreConfig,
        ResourceUtilization,
        HessianConfig,
    ],  # fmt: skip
)
def test_every_field_has_a_bad_value_case(cls):
    """A new field gets a validation and a case here (and a wrong value cannot pass silently)."""
    covered = field_ids(CASES)
    missing = [f.name for f in dataclasses.fields(cls) if f"{cls.__name__}.{f.name}" not in covered]
    assert not missing, f"no bad-value case for {cls.__name__} fields {missing}"


def test_good_values_still_pass():
    """The validation refuses nothing that is valid."""
    QuantizationConfig(weights_per_channel=None, z_threshold=None, l_p_value=1, weights_error_method="kl")
    QuantizationConfig(weights_per_channel=False, z_threshold=10, shift_negative_activation_correction=True)
    MixedPrecisionQuantizationConfig(configuration_overwrite=(0, 1), use_hessian_based_scores=True)
    BitWidthConfig().set_manual_weights_bit_width(4, layer_type="Dense").set_manual_activation_bit_width(
        8, name_regex="conv.*"
    )
    ResourceUtilization(weights_memory=0, bops=INF)


def test_config_errors_are_still_value_errors():
    """Code written against earlier versions (``except ValueError``) keeps working."""
    with pytest.raises(ValueError, match="l_p_value"):
        QuantizationConfig(l_p_value=0)
    assert issubclass(ConfigError, kerasq.KerasqError)
