"""Target platforms: unknown names, and user-built TPCs with a bad field or a typo'd op kind (issue 15: a kind
no node has used to leave those layers on the default config without a word)."""

from __future__ import annotations

import dataclasses

import pytest
from bad_input.matrix import Case, check, field_ids, images, params, tiny_model

import kerasq
from kerasq.core import QuantizationMethod
from kerasq.errors import ConfigError
from kerasq.platform import OperatorSet, OpQuantizationConfig, TargetPlatformCapabilities, capabilities

get_tpc = kerasq.get_target_platform_capabilities
OQC = OpQuantizationConfig
CFG = OQC()


def _cases(cls, field: str, values, names: tuple[str, ...], **fixed) -> list[Case]:
    return [
        Case(f"{cls.__name__}.{field}={v!r}", lambda v=v: cls(**fixed, **{field: v}), names) for v in values
    ]


def _tpc(*sets: OperatorSet, patterns=(), **kwargs) -> TargetPlatformCapabilities:
    return TargetPlatformCapabilities("mine", CFG, sets, patterns, **kwargs)


NAMES = [
    Case("get_tpc('imx9000')", lambda: get_tpc("imx9000"), ("'imx9000'", "imx500, tflite")),
    Case("get_tpc('tflight')", lambda: get_tpc("tflight"), ("'tflight'", "Did you mean 'tflite'")),
    Case("get_tpc(5)", lambda: get_tpc(5), ("platform name",)),
    Case("get_tpc(None)", lambda: get_tpc(None), ("platform name",)),
    Case("get_tpc('pytorch', 'imx500')", lambda: get_tpc("pytorch", "imx500"), ("framework 'pytorch'",)),
    Case("get_tpc(3, 'imx500')", lambda: get_tpc(3, "imx500"), ("framework 3",)),
    Case("get_tpc('tensorflow', 'imx9')", lambda: get_tpc("tensorflow", "imx9"), ("'imx9'",)),
]

OP_CONFIG = [
    *_cases(OQC, "activation_method", ["uniformm", 3], (r"OpQuantizationConfig\.activation_method",)),
    *_cases(OQC, "weights_method", [None], (r"OpQuantizationConfig\.weights_method",)),
    *_cases(OQC, "activation_n_bits", [1, 17, 8.0], (r"OpQuantizationConfig\.activation_n_bits",)),
    *_cases(OQC, "weights_n_bits", [0, True], (r"OpQuantizationConfig\.weights_n_bits",)),
    *_cases(OQC, "signedness", ["both", None], (r"OpQuantizationConfig\.signedness",)),
    *_cases(
        OQC, "weights_bit_candidates", [8, (8, 1), "842"], (r"OpQuantizationConfig\.weights_bit_candidates",)
    ),
    *_cases(
        OQC, "activation_bit_candidates", [(8, 4.0), 4], (r"OpQuantizationConfig\.activation_bit_candidates",)
    ),
    *_cases(
        OQC,
        "fixed_output_range",
        [(1.0, 2.0), (0.0,), 5, (0.0, "1"), (-1.0, float("inf")), (0.0, 0.0)],
        (r"OpQuantizationConfig\.fixed_output_range",),
    ),
    *[
        case
        for flag in (
            "enable_activation_quantization",
            "quantization_preserving",
            "weights_per_channel",
            "weights_narrow_range",
            "enable_weights_quantization",
            "inputs_share_output_grid",
            "output_on_input_grid",
        )  # fmt: skip
        for case in _cases(OQC, flag, ["yes", None], (rf"OpQuantizationConfig\.{flag}",))
    ],
]

OPERATOR_SETS = [
    Case(
        "OperatorSet.kinds=('conv2d',)",
        lambda: OperatorSet("w", ("conv2d",), CFG),
        ("'conv2d'", "Did you mean 'conv'"),
    ),
    Case(
        "OperatorSet.kinds=('Relu',)", lambda: OperatorSet("a", ("relu6", "Relu"), CFG), ("'Relu'", "'relu'")
    ),
    Case(
        "OperatorSet.kinds=('dense', 'batchnorm')",
        lambda: OperatorSet("w", ["dense", "batchnorm"], CFG),
        ("'batchnorm'", "batch_norm"),
    ),
    Case("OperatorSet.kinds='conv'", lambda: OperatorSet("w", "conv", CFG), (r"kinds must be a tuple",)),
    Case("OperatorSet.kinds=(3,)", lambda: OperatorSet("w", (3,), CFG), ("unknown op kind 3",)),
    *_cases(OperatorSet, "name", ["", None], (r"OperatorSet\.name",), kinds=("conv",), config=CFG),
    *_cases(OperatorSet, "config", [None, {}], ("OperatorSet 'w'", "config"), name="w", kinds=("conv",)),
]

w_set, a_set = OperatorSet("w", ("conv",), CFG), OperatorSet("a", ("relu",), CFG)
PLATFORMS = [
    *_cases(
        TargetPlatformCapabilities,
        "name",
        ["", None],
        (r"TargetPlatformCapabilities\.name",),
        default_config=CFG,
    ),
    *_cases(TargetPlatformCapabilities, "default_config", [None, "imx500"], ("default_config",), name="mine"),
    Case(
        "TargetPlatformCapabilities.operator_sets=OperatorSet",
        lambda: TargetPlatformCapabilities("mine", CFG, w_set),
        ("operator_sets must be a tuple",),
    ),
    Case(
        "TargetPlatformCapabilities.operator_sets=[w, 'a']",
        lambda: _tpc(w_set, "a"),
        ("operator_sets must hold OperatorSet",),
    ),
    Case(
        "TargetPlatformCapabilities.operator_sets(kind twice)",
        lambda: _tpc(w_set, OperatorSet("b", ("conv",), CFG)),
        ("'conv' is in operator sets 'w' and 'b'",),
    ),
    Case(
        "TargetPlatformCapabilities.operator_sets(name twice)",
        lambda: _tpc(w_set, OperatorSet("w", ("relu",), CFG)),
        ("named 'w'",),
    ),
    *_cases(
        TargetPlatformCapabilities,
        "fusing_patterns",
        [(("w",),), (("w", "act"),), ("wa",), "w", (("w", 3),)],
        ("fusing pattern|fusing_patterns",),
        name="mine",
        default_config=CFG,
        operator_sets=(w_set, a_set),
    ),
    Case(
        "TargetPlatformCapabilities.fusing_patterns('w', 'activaton')",
        lambda: _tpc(w_set, OperatorSet("activation", ("relu",), CFG), patterns=(("w", "activaton"),)),
        ("'activaton'", "Did you mean 'activation'"),
    ),
    Case(
        "OperatorSet.kinds=('Conv2D',)",
        lambda: OperatorSet("w", ("Conv2D",), CFG),
        ("'Conv2D'", "Did you mean 'conv'"),
    ),
    *_cases(
        TargetPlatformCapabilities,
        "shifted_activations",
        ["no", None],
        ("shifted_activations",),
        name="mine",
        default_config=CFG,
    ),
]

IN_PTQ = [
    Case(
        "ptq(target_platform_capabilities='imx500')",
        lambda: kerasq.ptq.keras_post_training_quantization(
            tiny_model(), images(), target_platform_capabilities="imx500"
        ),
        ("target_platform_capabilities",),
        owner="ptq.py",
        reason="_check_arguments raises a builtin ValueError",
    ),
    Case(
        "ptq(core_config={})",
        lambda: kerasq.ptq.keras_post_training_quantization(tiny_model(), images(), core_config={}),
        ("core_config",),
        owner="ptq.py",
        reason="_check_arguments raises a builtin ValueError",
    ),
]

CASES = NAMES + OP_CONFIG + OPERATOR_SETS + PLATFORMS + IN_PTQ


@pytest.mark.parametrize("case", params(CASES))
def test_bad_platform(case):
    check(case)


@pytest.mark.parametrize("cls", [OpQuantizationConfig, OperatorSet, TargetPlatformCapabilities])
def test_every_field_has_a_bad_value_case(cls):
    covered = field_ids(CASES)
    missing = [f.name for f in dataclasses.fields(cls) if f"{cls.__name__}.{f.name}" not in covered]
    assert not missing, f"no bad-value case for {cls.__name__} fields {missing}"


def test_builtin_platforms_use_only_known_kinds():
    for name in ("imx500", "tflite"):
        tpc = get_tpc(name)
        assert {k for s in tpc.operator_sets for k in s.kinds} <= capabilities.KNOWN_KINDS


def test_a_typo_no_longer_falls_back_to_the_default_config():
    """Issue 15: ``"Dense"`` (the class name) instead of the kind ``"dense"`` used to give every Dense layer the
    default config; now the platform cannot be built."""
    per_tensor = OQC(weights_per_channel=False, activation_method=QuantizationMethod.UNIFORM)
    with pytest.raises(ConfigError, match="unknown op kind 'Dense'.*Did you mean 'dense'"):
        TargetPlatformCapabilities("mine", CFG, (OperatorSet("fc", ("Dense",), per_tensor),))


def test_lists_and_method_names_are_accepted():
    """Lists where tuples are declared and method names as strings build the same platform."""
    cfg = OQC(activation_method="uniform", weights_bit_candidates=[8, 4], fixed_output_range=[0, 1])
    assert cfg.activation_method is QuantizationMethod.UNIFORM and cfg.weights_bit_candidates == (8, 4)
    tpc = TargetPlatformCapabilities("mine", cfg, [OperatorSet("w", ["conv"], cfg)], [["w", "w"]])
    assert tpc.operator_sets[0].kinds == ("conv",) and tpc.fusing_patterns == (("w", "w"),)
    hash(tpc)  # still hashable (frozen)
