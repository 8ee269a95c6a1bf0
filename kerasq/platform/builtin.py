"""The built-in platforms: ``imx500`` (default) and ``tflite``."""

from __future__ import annotations

import difflib
from dataclasses import replace

from kerasq.config.enums import QuantizationMethod
from kerasq.errors import ConfigError
from kerasq.platform.capabilities import OperatorSet, OpQuantizationConfig, TargetPlatformCapabilities
from kerasq.quantizers.weighted_kinds import WEIGHTED, kinds_with

_PRESERVING_KINDS = (
    "reshape", "flatten", "permute", "dropout", "zero_padding", "cropping", "max_pool", "global_max_pool",
    "upsampling", "identity",
)  # fmt: skip
_WEIGHTED = tuple(WEIGHTED)
_PER_TENSOR_ON_TFLITE = tuple(k for k in WEIGHTED if not WEIGHTED[k].per_channel_on_tflite)
_ACTIVATIONS = (
    "relu", "relu6", "leaky_relu", "prelu", "elu", "swish", "hard_swish", "gelu", "sigmoid", "hard_sigmoid",
    "tanh", "softplus", "selu",
)  # fmt: skip


def imx500() -> TargetPlatformCapabilities:
    """Sony IMX500-style: symmetric per-channel weights (8/4/2-bit candidates), power-of-two activations."""
    base = OpQuantizationConfig(
        activation_method=QuantizationMethod.POWER_OF_TWO,
        weights_method=QuantizationMethod.SYMMETRIC,
        weights_per_channel=True,
        activation_bit_candidates=(8, 4, 2),
    )
    weighted = replace(base, weights_bit_candidates=(8, 4, 2))
    preserving = replace(base, quantization_preserving=True, activation_bit_candidates=())
    return TargetPlatformCapabilities(
        name="imx500",
        default_config=base,
        operator_sets=(
            OperatorSet(name="weighted", kinds=_WEIGHTED, config=weighted),
            OperatorSet(name="activation", kinds=_ACTIVATIONS, config=base),
            OperatorSet(name="add", kinds=("add",), config=base),
            OperatorSet(name="no_quantization", kinds=_PRESERVING_KINDS, config=preserving),
        ),
        fusing_patterns=(
            ("weighted", "activation"),
            ("weighted", "add"),
            ("weighted", "add", "activation"),
            ("add", "activation"),
        ),
    )


def tflite() -> TargetPlatformCapabilities:
    """TFLite INT8 spec: symmetric per-channel int8 weights (8/4/2-bit grids for mixed precision, stored in
    int8), asymmetric uniform int8 activations."""
    base = OpQuantizationConfig(
        activation_method=QuantizationMethod.UNIFORM,
        weights_method=QuantizationMethod.SYMMETRIC,
        weights_per_channel=True,
        weights_narrow_range=True,
    )
    preserving = replace(base, quantization_preserving=True)
    # TFLite's int8 average pooling keeps the input scale but rounds each mean onto it.
    rounding_pool = replace(preserving, output_on_input_grid=True)
    # TFLite's int8 kernels fix these output grids: logistic/softmax scale 1/256 (zero point -128),
    # tanh scale 1/128 (zero point 0).
    unit_interval = replace(base, fixed_output_range=(0.0, 255.0 / 256.0))
    symmetric_unit = replace(base, fixed_output_range=(-1.0, 127.0 / 128.0))
    # Sub-8-bit kernels (mixed precision) are stored on their full-range grid ([-8, 7] at 4 bits) inside int8
    # tensors: exact in TFLite; only 8-bit kernels give up -128 (weights_narrow_range).
    weighted = replace(base, weights_bit_candidates=(8, 4, 2))
    per_tensor = replace(weighted, weights_per_channel=False)
    shared_grid = replace(base, inputs_share_output_grid=True)
    return TargetPlatformCapabilities(
        name="tflite",
        default_config=base,
        operator_sets=(
            OperatorSet(name="weighted", kinds=kinds_with("per_channel_on_tflite"), config=weighted),
            # The converter cannot keep per-channel scales on some kernels (transposed convolutions).
            OperatorSet(name="weighted_per_tensor", kinds=_PER_TENSOR_ON_TFLITE, config=per_tensor),
            OperatorSet(name="fusable_activation", kinds=("relu", "relu6"), config=base),
            OperatorSet(name="unit_interval", kinds=("sigmoid", "softmax"), config=unit_interval),
            OperatorSet(name="symmetric_unit", kinds=("tanh",), config=symmetric_unit),
            OperatorSet(name="concat", kinds=("concat",), config=shared_grid),
            OperatorSet(name="add", kinds=("add", "subtract"), config=base),
            OperatorSet(name="no_quantization", kinds=_PRESERVING_KINDS, config=preserving),
            OperatorSet(name="average_pooling", kinds=("avg_pool",), config=rounding_pool),
        ),
        fusing_patterns=(
            ("weighted", "fusable_activation"),
            ("weighted_per_tensor", "fusable_activation"),
            ("add", "fusable_activation"),
        ),
        shifted_activations=False,
    )


_BUILTIN = {"imx500": imx500, "tflite": tflite}
_ALIASES = {"default": "imx500", "sony": "imx500", "imx": "imx500", "litert": "tflite", "int8": "tflite"}
_FRAMEWORK_NAMES = ("tensorflow", "keras", "tf")


def get_target_platform_capabilities(
    name: str = "imx500", target_platform_name: str | None = None, target_platform_version: str | None = None
) -> TargetPlatformCapabilities:
    """Built-in platform by name: ``"imx500"`` (default) or ``"tflite"``.

    Also accepts MCT's call form ``get_target_platform_capabilities("tensorflow", "imx500")``.
    ``target_platform_version`` is accepted for compatibility; each platform has one version here.
    """
    if target_platform_name is not None:
        if not isinstance(name, str) or name.lower() not in _FRAMEWORK_NAMES:
            raise ConfigError(
                f"Unknown framework {name!r}: kerasq targets Keras 3 on TensorFlow; call "
                f"get_target_platform_capabilities('tensorflow', {target_platform_name!r}) or just "
                f"get_target_platform_capabilities({target_platform_name!r})."
            )
        name = target_platform_name
    if not isinstance(name, str):
        raise ConfigError(
            f"The platform name must be a string such as 'imx500' or 'tflite', got {type(name).__name__} {name!r}."
        )
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BUILTIN:
        known = ", ".join(sorted(_BUILTIN))
        close = difflib.get_close_matches(name.lower(), [*_BUILTIN, *_ALIASES], n=1)
        hint = f" Did you mean {_ALIASES.get(close[0], close[0])!r}?" if close else ""
        raise ConfigError(
            f"Unknown target platform {name!r}. Built-in platforms: {known}.{hint} For another device, build a "
            "kerasq.platform.TargetPlatformCapabilities."
        )
    return _BUILTIN[key]()
