"""``GradientPTQConfig``: how gradient-based rounding fine-tuning runs (validated on construction)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from kerasq.errors import ConfigError

ROUNDING_LEARNING_RATE = 0.05  # Adam on the rounding logits (they live on a ~[-3, 3] scale)
REST_LEARNING_RATE = 1e-4  # Adam on biases and kernel log-scales
REGULARIZATION_FACTOR = 100.0  # rounding regularizer (mean over values) vs the loss (PTQ = 1)
ACTIVATION_WARMUP = 0.3  # fraction of the steps over which activation quantization fades in, when asked


@dataclass
class GradientPTQConfig:
    """Fine-tuning of the quantized model's weight rounding against the float model (label-free).

    Attributes:
        n_epochs: passes over the fine-tuning data (>= 1).
        optimizer: Keras optimizer for the rounding variables; a fresh copy is made per run, so one config can be
            reused. None: ``Adam(ROUNDING_LEARNING_RATE)``.
        optimizer_rest: Keras optimizer for biases and kernel scales. None: ``Adam(REST_LEARNING_RATE)``.
        loss: ``loss(student, teacher, weights) -> scalar`` over lists of compare-point tensors (the outputs of
            the quantized layers) and, per point, a [batch] tensor of per-sample weights (equal across samples
            unless ``use_hessian_sample_attention``). None: weighted mean squared error.
        log_function: called after every epoch with ``(epoch, mean_loss, mean_regularizer)``.
        use_hessian_based_weights: weigh each compare point by its Hessian-trace score (how much the model
            output moves per unit of change there); otherwise every point counts the same, with its error
            relative to the point's own energy.
        use_hessian_sample_attention: weigh each sample at each compare point by its own Hessian-trace score
            (measured once per sample before training; the fine-tuning data must come in the same order every
            epoch). Needs ``use_hessian_based_weights``.
        hessian_num_samples: samples used for the per-point Hessian scores.
        regularization_factor: weight of the rounding regularizer, which pushes every rounding variable to a
            hard 0 or 1 as its temperature anneals. None: ``REGULARIZATION_FACTOR``.
        rounding_warmup: fraction of the steps before the temperature starts annealing (from 20 to 2).
        hard_phase: fraction of the steps, at the end, whose forward pass uses the hard rounding decisions (the
            gradient still reaches the soft variables): the last steps fit the model that will be deployed.
        train_bias: fine-tune the quantized layers' biases too.
        train_scales: fine-tune the kernel scales too (symmetric and uniform grids; power-of-two kernel grids
            stay as they are, since a trained scale would leave the power-of-two set).
        gradual_activation_quantization: fade activation quantization in (False: quantized from the first step;
            True: over the first ``ACTIVATION_WARMUP`` of the steps; a float in (0, 1]: over that fraction).
    """

    n_epochs: int
    optimizer: keras.optimizers.Optimizer | None = None
    optimizer_rest: keras.optimizers.Optimizer | None = None
    loss: Callable[[list[Any], list[Any], list[float]], Any] | None = None
    log_function: Callable[[int, float, float], None] | None = None
    use_hessian_based_weights: bool = True
    use_hessian_sample_attention: bool = False
    hessian_num_samples: int = 32
    regularization_factor: float | None = None
    rounding_warmup: float = 0.2
    hard_phase: float = 0.25
    train_bias: bool = True
    train_scales: bool = False
    gradual_activation_quantization: bool | float = False

    def __post_init__(self) -> None:
        if isinstance(self.n_epochs, bool) or not isinstance(self.n_epochs, int) or self.n_epochs < 1:
            raise ConfigError(f"GradientPTQConfig.n_epochs must be an integer >= 1, got {self.n_epochs!r}.")
        for name in ("optimizer", "optimizer_rest"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, keras.optimizers.Optimizer):
                raise ConfigError(
                    f"GradientPTQConfig.{name} must be a keras.optimizers.Optimizer (e.g. "
                    f"keras.optimizers.Adam(1e-3)) or None, got {type(value).__name__}."
                )
        for name in ("loss", "log_function"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"GradientPTQConfig.{name} must be callable or None, got {value!r}.")
        for name in (
            "use_hessian_based_weights",
            "use_hessian_sample_attention",
            "train_bias",
            "train_scales",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"GradientPTQConfig.{name} must be True or False, got {getattr(self, name)!r}."
                )
        if self.use_hessian_sample_attention and not self.use_hessian_based_weights:
            raise ConfigError(
                "GradientPTQConfig.use_hessian_sample_attention needs use_hessian_based_weights=True (it refines "
                "the Hessian weights per sample)."
            )
        if (isinstance(self.hessian_num_samples, bool) or not isinstance(self.hessian_num_samples, int)
                or self.hessian_num_samples < 1):  # fmt: skip
            raise ConfigError(
                f"GradientPTQConfig.hessian_num_samples must be an integer >= 1, got {self.hessian_num_samples!r}."
            )
        if self.regularization_factor is not None and not (
            isinstance(self.regularization_factor, int | float) and 0 <= self.regularization_factor < math.inf
        ):
            raise ConfigError(
                "GradientPTQConfig.regularization_factor must be a finite number >= 0 or None, "
                f"got {self.regularization_factor!r}."
            )
        if not (isinstance(self.rounding_warmup, int | float) and 0 <= self.rounding_warmup < 1):
            raise ConfigError(
                f"GradientPTQConfig.rounding_warmup must be in [0, 1), got {self.rounding_warmup!r}."
            )
        if not (isinstance(self.hard_phase, int | float) and 0 <= self.hard_phase < 1):
            raise ConfigError(f"GradientPTQConfig.hard_phase must be in [0, 1), got {self.hard_phase!r}.")
        g = self.gradual_activation_quantization
        if not isinstance(g, bool) and not (isinstance(g, int | float) and 0 < g <= 1):
            raise ConfigError(
                "GradientPTQConfig.gradual_activation_quantization must be True, False or a fraction of the "
                f"steps in (0, 1], got {g!r}."
            )

    @property
    def activation_warmup(self) -> float:
        """Fraction of the steps over which activation quantization fades in (0: none)."""
        if not (isinstance(self.hard_phase, int | float) and 0 <= self.hard_phase < 1):
            raise ConfigError(f"GradientPTQConfig.hard_phase must be in [0, 1), got {self.hard_phase!r}.")
        g = self.gradual_activation_quantization
        if isinstance(g, bool):
            return ACTIVATION_WARMUP if g else 0.0
        return float(g)

    @property
    def regularization(self) -> float:
        return (
            REGULARIZATION_FACTOR if self.regularization_factor is None else float(self.regularization_factor)
        )

    def make_optimizers(self) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
        """Fresh optimizers (rounding, rest) for one run: an optimizer instance binds to the variables it saw."""

        def fresh(opt: keras.optimizers.Optimizer | None, lr: float) -> keras.optimizers.Optimizer:
            if opt is None:
                return keras.optimizers.Adam(learning_rate=lr)
            return type(opt).from_config(opt.get_config())

        return fresh(self.optimizer, ROUNDING_LEARNING_RATE), fresh(self.optimizer_rest, REST_LEARNING_RATE)


def get_keras_gptq_config(
    n_epochs: int,
    optimizer: keras.optimizers.Optimizer | None = None,
    optimizer_rest: keras.optimizers.Optimizer | None = None,
    loss: Callable | None = None,
    log_function: Callable | None = None,
    use_hessian_based_weights: bool = True,
    regularization_factor: float | None = None,
    hessian_batch_size: int = 32,
    use_hessian_sample_attention: bool = False,
    gradual_activation_quantization: bool | float = False,
    train_bias: bool = True,
    train_scales: bool = False,
) -> GradientPTQConfig:
    """A ``GradientPTQConfig`` with MCT's argument names (``hessian_batch_size`` = samples for the Hessian)."""
    return GradientPTQConfig(
        n_epochs=n_epochs, optimizer=optimizer, optimizer_rest=optimizer_rest, loss=loss,
        log_function=log_function, use_hessian_based_weights=use_hessian_based_weights,
        hessian_num_samples=hessian_batch_size, regularization_factor=regularization_factor,
        use_hessian_sample_attention=use_hessian_sample_attention,
        gradual_activation_quantization=gradual_activation_quantization, train_bias=train_bias,
        train_scales=train_scales,
    )  # fmt: skip
