"""Target platform capabilities: built-ins, MCT call form, validation of user-built TPCs."""

from __future__ import annotations

import pytest

import kerasq
from kerasq.core import QuantizationMethod
from kerasq.platform import OperatorSet, OpQuantizationConfig, TargetPlatformCapabilities


def test_imx500_is_the_default_and_matches_its_spec():
    tpc = kerasq.get_target_platform_capabilities()
    assert tpc.name == "imx500"
    conv = tpc.config_for("conv")
    assert conv.weights_method is QuantizationMethod.SYMMETRIC and conv.weights_per_channel
    assert conv.weights_candidates == (8, 4, 2)
    assert tpc.config_for("relu").activation_method is QuantizationMethod.POWER_OF_TWO
    assert tpc.config_for("reshape").quantization_preserving


def test_tflite_platform():
    tpc = kerasq.get_target_platform_capabilities("tflite")
    assert tpc.config_for("add").activation_method is QuantizationMethod.UNIFORM
    assert tpc.config_for("dense").weights_narrow_range
    assert tpc.config_for("dense").weights_candidates == (8, 4, 2)  # sub-8-bit grids stored in int8


@pytest.mark.parametrize("args", [("tensorflow", "imx500"), ("tensorflow", "default", "v4"), ("IMX500",)])
def test_mct_call_forms(args):
    assert kerasq.get_target_platform_capabilities(*args).name == "imx500"


def test_unknown_framework():
    with pytest.raises(ValueError, match="framework 'pytorch'"):
        kerasq.get_target_platform_capabilities("pytorch", "imx500")


def test_invalid_op_config():
    with pytest.raises(ValueError, match="weights_n_bits"):
        OpQuantizationConfig(weights_n_bits=1)
    with pytest.raises(ValueError, match="signedness"):
        OpQuantizationConfig(signedness="maybe")


def test_kind_in_two_sets_is_rejected():
    cfg = OpQuantizationConfig()
    with pytest.raises(ValueError, match="'relu' is in operator sets 'a' and 'b'"):
        TargetPlatformCapabilities(
            "x", cfg, (OperatorSet("a", ("relu",), cfg), OperatorSet("b", ("relu",), cfg))
        )


def test_fusing_pattern_must_name_known_sets():
    cfg = OpQuantizationConfig()
    with pytest.raises(ValueError, match="unknown sets"):
        TargetPlatformCapabilities("x", cfg, (OperatorSet("a", ("conv",), cfg),), (("a", "nope"),))
