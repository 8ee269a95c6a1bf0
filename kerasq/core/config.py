"""User-facing configuration dataclasses, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kerasq.core.enums import QuantizationErrorMethod, parse_enum


def _check_error_method(name: str, value: object) -> QuantizationErrorMethod:
    return parse_enum(QuantizationErrorMethod, value, f"QuantizationConfig.{name}")


@dataclass
class QuantizationConfig:
    """How thresholds are chosen and which corrections run.

    Attributes:
        activation_error_method: objective for activation thresholds (default MSE).
        weights_error_method: objective for weight thresholds (default MSE). HMSE needs the
            mixed-precision Hessian service and is rejected by plain PTQ.
        l_p_value: exponent p used by the LP error method (p > 0).
        weights_per_channel: override the platform's per-channel choice (None keeps the platform's).
        activation_n_bits / weights_n_bits: override the platform's default bit widths (2..16, None keeps them).
        num_histogram_bins: histogram resolution for activation statistics (even, >= 64).
    """

    activation_error_method: QuantizationErrorMethod = QuantizationErrorMethod.MSE
    weights_error_method: QuantizationErrorMethod = QuantizationErrorMethod.MSE
    l_p_value: float = 2.0
    weights_per_channel: bool | None = None
    activation_n_bits: int | None = None
    weights_n_bits: int | None = None
    num_histogram_bins: int = 4096

    def __post_init__(self) -> None:
        self.activation_error_method = _check_error_method(
            "activation_error_method", self.activation_error_method
        )
        self.weights_error_method = _check_error_method("weights_error_method", self.weights_error_method)
        if self.activation_error_method is QuantizationErrorMethod.HMSE:
            raise ValueError(
                "QuantizationConfig.activation_error_method=HMSE is not valid: HMSE weighs weight errors by "
                "Hessian scores and applies to weights only. Use MSE, MAE, LP, KL or NOCLIPPING for activations."
            )
        if isinstance(self.l_p_value, bool) or not isinstance(self.l_p_value, (int, float)):
            raise ValueError(
                f"QuantizationConfig.l_p_value must be a positive number, got {self.l_p_value!r}."
            )
        if not (math.isfinite(self.l_p_value) and self.l_p_value > 0):
            raise ValueError(
                f"QuantizationConfig.l_p_value must be a finite number > 0, got {self.l_p_value!r}."
            )
        for name in ("activation_n_bits", "weights_n_bits"):
            bits = getattr(self, name)
            if bits is not None and (
                isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16
            ):
                raise ValueError(
                    f"QuantizationConfig.{name} must be an integer in 2..16 or None, got {bits!r}."
                )
        bins = self.num_histogram_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 64 or bins % 4:
            raise ValueError(
                f"QuantizationConfig.num_histogram_bins must be an integer >= 64 divisible by 4, got {bins!r}."
            )


@dataclass
class CoreConfig:
    """Top-level configuration of a quantization run (what ``keras_post_training_quantization`` takes)."""

    quantization_config: QuantizationConfig = field(default_factory=QuantizationConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.quantization_config, QuantizationConfig):
            raise ValueError(
                "CoreConfig.quantization_config must be a kerasq.core.QuantizationConfig, "
                f"got {type(self.quantization_config).__name__}."
            )
