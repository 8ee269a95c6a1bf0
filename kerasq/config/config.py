"""User-facing configuration dataclasses, validated on construction."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from kerasq.config.enums import MpDistanceWeighting, QuantizationErrorMethod, parse_enum
from kerasq.errors import ConfigError


def _check_error_method(name: str, value: object) -> QuantizationErrorMethod:
    return parse_enum(QuantizationErrorMethod, value, f"QuantizationConfig.{name}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_flags(owner: object, *names: str) -> None:
    """Each named field is True or False (a string such as "yes" or 0/1 is refused, not read as truthy)."""
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, bool):
            raise ConfigError(f"{type(owner).__name__}.{name} must be True or False, got {value!r}.")


@dataclass
class QuantizationConfig:
    """How thresholds are chosen and which corrections run.

    Attributes:
        activation_error_method: objective for activation thresholds (default MSE).
        weights_error_method: objective for weight thresholds (default MSE). HMSE weighs each weight's error
            by its Hessian score (label-free, from the representative data).
        l_p_value: exponent p used by the LP error method (p > 0).
        weights_per_channel: override the platform's per-channel choice (None keeps the platform's).
        activation_n_bits / weights_n_bits: override the platform's default bit widths (2..16, None keeps them).
        num_histogram_bins: histogram resolution for activation statistics (even, >= 64).
        weights_bias_correction: remove the mean output shift weight quantization causes, using the input of
            each conv / depthwise / dense layer averaged over the representative data (default on).
        weights_compensated_rounding: round conv / depthwise / dense kernels of at most 7 bits with error
            compensation (OPTQ, Frantar et al. 2023): row by row, each rounding error is spread over the rows not
            rounded yet, weighted by the inverse of the layer's input correlation measured on the representative
            data. The grids stay those the error method chose; only the level each value takes changes. Default
            on (no MCT counterpart; 8-bit kernels always round to nearest, gradient-based PTQ learns its own
            rounding).
        z_threshold: remove activation values whose z-score exceeds this before choosing thresholds
            (outliers; typical 5..20). None (default) keeps every value.
        shift_negative_activation_correction: activations with a negative tail (swish, gelu, elu, leaky relu,
            PReLU, hard swish, selu) that feed a conv / depthwise / dense layer are shifted up by their negative
            minimum and quantized unsigned (one more bit of resolution); the next layer's bias absorbs the shift
            (padding made explicit so borders stay exact). Default on, as in MCT 2.6.1; platforms that cannot apply an
            activation and a shift in one kernel (``tflite``) skip it.
        shift_negative_ratio: shift only a small negative tail: ``|min| / threshold <= ratio`` (default 0.05).
        shift_negative_threshold_recalculation: choose the shifted tensor's threshold again on the shifted
            values (default: keep the threshold chosen before the shift, as MCT does; at 6 bits and below the
            recalculated threshold is usually better, since the unsigned grid can afford a wider range).
        shift_negative_params_search: search the shift (fractions of ``|min|``) for the lowest quantization
            error instead of shifting by exactly ``|min|``.
        concat_threshold_update: concatenation inputs take the concatenation's output grid, so concat is exact
            in integer arithmetic (the ``tflite`` platform always does this).
        linear_collapsing: merge a linear conv followed by a 1x1 conv (or dense -> dense) into one layer.
        residual_collapsing: fold ``x + conv(x)`` into the conv's kernel (identity added at the centre tap).
        relu_bound_to_power_of_2: rescale bounded ReLUs (ReLU6) to a power-of-two bound, moving the scale into
            the neighbouring kernels (default off, as in MCT).
        All rewrites keep the float function identical.
    """

    activation_error_method: QuantizationErrorMethod = QuantizationErrorMethod.MSE
    weights_error_method: QuantizationErrorMethod = QuantizationErrorMethod.MSE
    l_p_value: float = 2.0
    weights_per_channel: bool | None = None
    activation_n_bits: int | None = None
    weights_n_bits: int | None = None
    num_histogram_bins: int = 4096
    weights_bias_correction: bool = True
    weights_compensated_rounding: bool = True
    z_threshold: float | None = None
    shift_negative_activation_correction: bool = True
    shift_negative_ratio: float = 0.05
    shift_negative_threshold_recalculation: bool = False
    shift_negative_params_search: bool = False
    concat_threshold_update: bool = False
    linear_collapsing: bool = True
    residual_collapsing: bool = True
    relu_bound_to_power_of_2: bool = False

    def __post_init__(self) -> None:
        self.activation_error_method = _check_error_method(
            "activation_error_method", self.activation_error_method
        )
        self.weights_error_method = _check_error_method("weights_error_method", self.weights_error_method)
        if self.activation_error_method is QuantizationErrorMethod.HMSE:
            raise ConfigError(
                "QuantizationConfig.activation_error_method=HMSE is not valid: HMSE weighs weight errors by "
                "Hessian scores and applies to weights only. Use MSE, MAE, LP, KL or NOCLIPPING for activations."
            )
        if not _is_number(self.l_p_value) or not (math.isfinite(self.l_p_value) and self.l_p_value > 0):
            raise ConfigError(
                f"QuantizationConfig.l_p_value must be a finite number > 0 (2 is the default), "
                f"got {self.l_p_value!r}."
            )
        for name in ("activation_n_bits", "weights_n_bits"):
            bits = getattr(self, name)
            if bits is not None and (not _is_int(bits) or not 2 <= bits <= 16):
                raise ConfigError(
                    f"QuantizationConfig.{name} must be an integer in 2..16, or None to keep the platform's "
                    f"width, got {bits!r}."
                )
        if self.weights_per_channel is not None and not isinstance(self.weights_per_channel, bool):
            raise ConfigError(
                "QuantizationConfig.weights_per_channel must be True, False or None (keep the platform's "
                f"choice), got {self.weights_per_channel!r}."
            )
        _check_flags(
            self, "weights_bias_correction", "weights_compensated_rounding", "shift_negative_activation_correction",
            "shift_negative_threshold_recalculation", "shift_negative_params_search", "concat_threshold_update",
            "linear_collapsing", "residual_collapsing", "relu_bound_to_power_of_2",
        )  # fmt: skip
        ratio = self.shift_negative_ratio
        if not _is_number(ratio) or not 0 <= ratio < 1:
            raise ConfigError(
                f"QuantizationConfig.shift_negative_ratio must be a number in [0, 1) (0.05 is the default), "
                f"got {ratio!r}."
            )
        z = self.z_threshold
        if z is not None and (not _is_number(z) or not (math.isfinite(z) and z > 0)):
            raise ConfigError(
                f"QuantizationConfig.z_threshold must be a finite number > 0 (typically 5..20), or None to keep "
                f"every value, got {z!r}."
            )
        bins = self.num_histogram_bins
        if not _is_int(bins) or bins < 64 or bins % 4:
            raise ConfigError(
                "QuantizationConfig.num_histogram_bins must be an integer >= 64 divisible by 4 (4096 is the "
                f"default), got {bins!r}."
            )


@dataclass
class MixedPrecisionQuantizationConfig:
    """How mixed precision measures sensitivity (it runs when a ``target_resource_utilization`` is given).

    Attributes:
        num_of_images: representative samples used for sensitivity (and Hessian scores).
        distance_weighting_method: how interest-point distances are combined (``MpDistanceWeighting``).
        use_hessian_based_scores: weight interest points by Hessian-trace estimates (same as
            ``distance_weighting_method=MpDistanceWeighting.HESSIAN``).
        exp_distance_weighting_sigma: depth scale of ``MpDistanceWeighting.EXP`` (> 0).
        configuration_overwrite: one candidate index per configurable layer (0 = highest bits), in the order
            ``QuantizationInfo.mixed_precision.units`` lists them; bypasses the search.
        refine_after_solve: after the integer program, raise bits where budget remains and sensitivity drops.
    """

    num_of_images: int = 32
    distance_weighting_method: MpDistanceWeighting = MpDistanceWeighting.AVG
    use_hessian_based_scores: bool = False
    exp_distance_weighting_sigma: float = 0.25
    configuration_overwrite: list[int] | None = None
    refine_after_solve: bool = True

    def __post_init__(self) -> None:
        owner = "MixedPrecisionQuantizationConfig"
        if not _is_int(self.num_of_images) or self.num_of_images < 1:
            raise ConfigError(
                f"{owner}.num_of_images must be an integer >= 1 (32 is the default), got {self.num_of_images!r}."
            )
        self.distance_weighting_method = parse_enum(
            MpDistanceWeighting, self.distance_weighting_method, f"{owner}.distance_weighting_method"
        )
        _check_flags(self, "use_hessian_based_scores", "refine_after_solve")
        if self.use_hessian_based_scores:
            self.distance_weighting_method = MpDistanceWeighting.HESSIAN
        sigma = self.exp_distance_weighting_sigma
        if not _is_number(sigma) or not (math.isfinite(sigma) and sigma > 0):
            raise ConfigError(
                f"{owner}.exp_distance_weighting_sigma must be a finite number > 0 (0.25 is the default), "
                f"got {sigma!r}."
            )
        overwrite = self.configuration_overwrite
        if overwrite is not None:
            if not isinstance(overwrite, (list, tuple)) or not all(_is_int(i) and i >= 0 for i in overwrite):
                raise ConfigError(
                    f"{owner}.configuration_overwrite must be a list of candidate indices (integers >= 0, "
                    f"0 = highest bits), one per unit QuantizationInfo.mixed_precision.units lists, "
                    f"got {overwrite!r}."
                )
            self.configuration_overwrite = list(overwrite)


_TARGETS = ("weights", "activation")
_SELECTORS = ("name", "name_regex", "layer_type")


@dataclass(frozen=True)
class ManualBitWidth:
    """Pin the bit width of the layers one selector matches (exactly one of name / name_regex / layer_type).

    ``layer_type`` matches the Keras class (or its name, e.g. ``"Dense"``) or kerasq's op kind (``"conv"``).
    ``target="weights"`` pins the layer's kernels; ``"activation"`` pins its output tensor(s) (model inputs
    are matched by input name).
    """

    bits: int
    target: str = "weights"
    name: str | None = None
    name_regex: str | None = None
    layer_type: type | str | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.bits) or not 2 <= self.bits <= 16:
            raise ConfigError(f"ManualBitWidth.bits must be an integer in 2..16, got {self.bits!r}.")
        if not isinstance(self.target, str) or self.target not in _TARGETS:
            raise ConfigError(f"ManualBitWidth.target must be one of {_TARGETS}, got {self.target!r}.")
        given = [s for s in _SELECTORS if getattr(self, s) is not None]
        if len(given) != 1:
            raise ConfigError(
                "ManualBitWidth needs exactly one selector: name=..., name_regex=... or layer_type=...; "
                f"got {given or 'none'}."
            )
        for selector in ("name", "name_regex"):
            value = getattr(self, selector)
            if value is not None and not isinstance(value, str):
                raise ConfigError(
                    f"ManualBitWidth.{selector} must be a string (a layer name), got {type(value).__name__} "
                    f"{value!r}."
                )
        if self.layer_type is not None and not isinstance(self.layer_type, (str, type)):
            raise ConfigError(
                "ManualBitWidth.layer_type must be a Keras layer class (keras.layers.Dense), its name ('Dense') "
                f"or a kerasq op kind ('conv'), got {type(self.layer_type).__name__} {self.layer_type!r}."
            )
        if self.name_regex is not None:
            try:
                re.compile(self.name_regex)
            except re.error as err:
                raise ConfigError(
                    f"ManualBitWidth.name_regex={self.name_regex!r} is not a valid regular expression ({err}); "
                    "fix the pattern, or select by name=... instead."
                ) from err

    def describe(self) -> str:
        if self.name is not None:
            return f"name={self.name!r}"
        if self.name_regex is not None:
            return f"name_regex={self.name_regex!r}"
        layer_type = self.layer_type
        return f"layer_type={getattr(layer_type, '__name__', layer_type)!r}"

    def matches(self, name: str, layer_class: type, kind: str | None) -> bool:
        if self.name is not None:
            return name == self.name
        if self.name_regex is not None:
            return re.fullmatch(self.name_regex, name) is not None
        if isinstance(self.layer_type, str):
            return self.layer_type in (layer_class.__name__, kind)
        return isinstance(self.layer_type, type) and issubclass(layer_class, self.layer_type)


@dataclass
class BitWidthConfig:
    """Manual bit widths, respected by plain PTQ and by the mixed-precision search.

    ``BitWidthConfig().set_manual_weights_bit_width(4, name_regex="block3_.*").set_manual_activation_bit_width(
    16, layer_type="Softmax")``. Later rules win where several match. A rule that matches no layer is an error.
    """

    rules: list[ManualBitWidth] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.rules, list):
            raise ConfigError(
                f"BitWidthConfig.rules must be a list of ManualBitWidth, got {type(self.rules).__name__}."
            )
        for rule in self.rules:
            if not isinstance(rule, ManualBitWidth):
                raise ConfigError(
                    "BitWidthConfig.rules holds ManualBitWidth entries (or use set_manual_weights_bit_width / "
                    f"set_manual_activation_bit_width), got {type(rule).__name__}."
                )

    def set_manual_weights_bit_width(self, bits: int, **selector: Any) -> BitWidthConfig:
        self.rules.append(ManualBitWidth(bits=bits, target="weights", **_selector(selector)))
        return self

    def set_manual_activation_bit_width(self, bits: int, **selector: Any) -> BitWidthConfig:
        self.rules.append(ManualBitWidth(bits=bits, target="activation", **_selector(selector)))
        return self


def _selector(selector: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(selector) - set(_SELECTORS))
    if unknown:
        raise ConfigError(
            f"BitWidthConfig: unknown selector {unknown[0]!r}; select layers by name=..., name_regex=... or "
            "layer_type=..."
        )
    return selector


@dataclass
class CoreConfig:
    """Top-level configuration of a quantization run (what ``keras_post_training_quantization`` takes).

    ``n_iter`` (keyword only): use at most this many batches of the representative data (MCT's ``n_iter``, the
    number of calibration iterations, one batch each). None (default) uses all of it, except that a generator or
    a ``tf.data.Dataset`` of unknown or infinite length is cut after 4096 samples, with a warning.
    """

    quantization_config: QuantizationConfig = field(default_factory=QuantizationConfig)
    mixed_precision_config: MixedPrecisionQuantizationConfig = field(
        default_factory=MixedPrecisionQuantizationConfig
    )
    bit_width_config: BitWidthConfig = field(default_factory=BitWidthConfig)
    n_iter: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        expected = {
            "quantization_config": QuantizationConfig,
            "mixed_precision_config": MixedPrecisionQuantizationConfig,
            "bit_width_config": BitWidthConfig,
        }
        for name, cls in expected.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"CoreConfig.{name} must be a kerasq.core.{cls.__name__}, "
                    f"got {type(getattr(self, name)).__name__}."
                )
        if self.n_iter is not None and (not _is_int(self.n_iter) or self.n_iter < 1):
            raise ConfigError(
                f"CoreConfig.n_iter must be a positive integer (batches of representative data to use) or None "
                f"(all of it), got {self.n_iter!r}."
            )
