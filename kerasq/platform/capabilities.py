"""Target platform capabilities (TPC): what a device can run, declared as data.

A TPC maps operator sets (groups of op kinds, see ``kerasq.graph.op_kinds``) to quantization options and
lists fusing patterns (chains whose intermediate outputs the device never materializes, so they are not
quantized). Users build their own by instantiating these dataclasses.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from kerasq.config.enums import QuantizationMethod, parse_enum
from kerasq.errors import ConfigError
from kerasq.graph import op_kinds

_SIGNEDNESS = ("auto", "signed", "unsigned")
_FLAGS = (
    "enable_activation_quantization", "quantization_preserving", "weights_per_channel", "weights_narrow_range",
    "enable_weights_quantization", "inputs_share_output_grid", "output_on_input_grid",
)  # fmt: skip

# Every kind a graph node can have: what ``op_kinds`` maps layers, activation functions and ``keras.ops`` calls to.
KNOWN_KINDS = frozenset(op_kinds.WEIGHTED_KINDS) | {
    kind
    for table in (op_kinds._LAYER_KINDS, op_kinds._ACTIVATION_KINDS, op_kinds._OPS_KINDS)
    for kind in table.values()
}


def _check_bits(owner: str, name: str, bits: object) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ConfigError(f"{owner}.{name} must be an integer in 2..16, got {bits!r}.")


def _did_you_mean(value: str, known: Iterable[str]) -> str:
    choices = sorted(known)
    if value in op_kinds._LAYER_KINDS and op_kinds._LAYER_KINDS[value] in choices:  # a Keras class name
        return f" Did you mean {op_kinds._LAYER_KINDS[value]!r} (the kind of Keras' {value})?"
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1)
    return f" Did you mean {lowered[close[0]]!r}?" if close else ""


def _set(instance: object, name: str, value: object) -> None:
    object.__setattr__(instance, name, value)  # normalizing a field of a frozen dataclass in __post_init__


def _as_tuple(label: str, value: object, example: str) -> tuple:
    """A list or tuple field as a tuple; a string or scalar is refused (``tuple("conv")`` would split it)."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ConfigError(f"{label} must be a tuple, e.g. {example}, got {type(value).__name__} {value!r}.")


@dataclass(frozen=True)
class OpQuantizationConfig:
    """Quantization options for one operator set.

    Attributes:
        activation_method / activation_n_bits: grid of the op's output tensor.
        enable_activation_quantization: False keeps the output in float.
        quantization_preserving: the output reuses its input's grid (reshape, max-pool, ...): no new quantizer.
        signedness: "auto" (signed iff negative values are observed), "signed" or "unsigned".
        weights_method / weights_n_bits / weights_per_channel: kernel grid.
        weights_narrow_range: the most negative int8 value (-128) is never used, as TFLite's int8 kernels
            require: a symmetric grid of 8 or more bits drops its most negative level ([-127, 127] at 8 bits);
            a grid of fewer bits fits in [-127, 127] with its full range and keeps it ([-8, 7] at 4 bits,
            [-2, 1] at 2 bits; ``kerasq.quantizers.grid.integer_range``).
        enable_weights_quantization: False keeps kernels in float.
        weights_bit_candidates / activation_bit_candidates: widths mixed precision may choose from
            (empty means just the default width).
        inputs_share_output_grid: the op's inputs take its output grid, whatever else reads them (TFLite's
            converter gives a concatenation and all its operands one scale).
        output_on_input_grid: with ``quantization_preserving``, the op rounds its output onto its input's
            grid (TFLite's int8 average pooling keeps the input scale but rounds each mean, ties away from the
            stored int8 zero), so a quantizer on the input's grid, rounding ties that way, follows it.
        fixed_output_range: (lo, hi) the device imposes on the output (e.g. TFLite's softmax/logistic
            [0, 255/256]); used instead of a searched threshold. With UNIFORM 8-bit activations the grid is
            exactly TFLite's fixed scale and zero point.
    """

    activation_method: QuantizationMethod = QuantizationMethod.POWER_OF_TWO
    activation_n_bits: int = 8
    enable_activation_quantization: bool = True
    quantization_preserving: bool = False
    signedness: str = "auto"
    weights_method: QuantizationMethod = QuantizationMethod.SYMMETRIC
    weights_n_bits: int = 8
    weights_per_channel: bool = True
    weights_narrow_range: bool = True
    enable_weights_quantization: bool = True
    weights_bit_candidates: tuple[int, ...] = ()
    activation_bit_candidates: tuple[int, ...] = ()
    fixed_output_range: tuple[float, float] | None = None
    inputs_share_output_grid: bool = False
    output_on_input_grid: bool = False

    def __post_init__(self) -> None:
        owner = "OpQuantizationConfig"
        for name in ("activation_method", "weights_method"):
            _set(self, name, parse_enum(QuantizationMethod, getattr(self, name), f"{owner}.{name}"))
        _check_bits(owner, "activation_n_bits", self.activation_n_bits)
        _check_bits(owner, "weights_n_bits", self.weights_n_bits)
        if not isinstance(self.signedness, str) or self.signedness not in _SIGNEDNESS:
            raise ConfigError(f"{owner}.signedness must be one of {_SIGNEDNESS}, got {self.signedness!r}.")
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{owner}.{name} must be True or False, got {getattr(self, name)!r}.")
        for name in ("weights_bit_candidates", "activation_bit_candidates"):
            candidates = _as_tuple(f"{owner}.{name}", getattr(self, name), "(8, 4, 2)")
            for bits in candidates:
                _check_bits(owner, name, bits)
            _set(self, name, candidates)
        fixed = self.fixed_output_range
        if fixed is not None:
            fixed = _as_tuple(f"{owner}.fixed_output_range", fixed, "(0.0, 255 / 256)")
            if not (
                len(fixed) == 2
                and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in fixed
                )
                and fixed[0] <= 0 <= fixed[1]
                and fixed[0] < fixed[1]
            ):
                raise ConfigError(
                    f"{owner}.fixed_output_range must be (lo, hi), finite numbers with lo <= 0 <= hi and lo < hi, "
                    f"or None for a searched range, got {self.fixed_output_range!r}."
                )
            _set(self, "fixed_output_range", fixed)

    @property
    def weights_candidates(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.weights_bit_candidates) | {self.weights_n_bits}, reverse=True))

    @property
    def activation_candidates(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.activation_bit_candidates) | {self.activation_n_bits}, reverse=True))


@dataclass(frozen=True)
class OperatorSet:
    """A named group of op kinds sharing one quantization config."""

    name: str
    kinds: tuple[str, ...]
    config: OpQuantizationConfig

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"OperatorSet.name must be a non-empty string, got {self.name!r}.")
        where = f"OperatorSet {self.name!r}"
        kinds = _as_tuple(f"{where}: kinds", self.kinds, "('conv', 'dense')")
        for kind in kinds:
            if not isinstance(kind, str) or kind not in KNOWN_KINDS:
                raise ConfigError(
                    f"{where}: unknown op kind {kind!r}; a kind nothing in a graph has would leave those layers on "
                    f"the default config.{_did_you_mean(str(kind), KNOWN_KINDS)} Known kinds: "
                    f"{', '.join(sorted(KNOWN_KINDS))}."
                )
        _set(self, "kinds", kinds)
        if not isinstance(self.config, OpQuantizationConfig):
            raise ConfigError(
                f"{where}: config must be an OpQuantizationConfig, got {type(self.config).__name__}."
            )


@dataclass(frozen=True)
class TargetPlatformCapabilities:
    """A device's quantization rules: per-operator-set configs, a default, and fusing patterns."""

    name: str
    default_config: OpQuantizationConfig
    operator_sets: tuple[OperatorSet, ...] = ()
    fusing_patterns: tuple[tuple[str, ...], ...] = field(default=())
    # the device applies an activation and a constant shift in one kernel before requantizing (what
    # shift-negative correction needs); TFLite's int8 kernels do not
    shifted_activations: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"TargetPlatformCapabilities.name must be a non-empty string, got {self.name!r}."
            )
        where = f"TPC {self.name!r}"
        if not isinstance(self.default_config, OpQuantizationConfig):
            raise ConfigError(
                f"{where}: default_config must be an OpQuantizationConfig, got {type(self.default_config).__name__}."
            )
        if not isinstance(self.shifted_activations, bool):
            raise ConfigError(
                f"{where}: shifted_activations must be True or False, got {self.shifted_activations!r}."
            )
        operator_sets = _as_tuple(f"{where}: operator_sets", self.operator_sets, "(OperatorSet(...), ...)")
        seen: dict[str, str] = {}
        names: set[str] = set()
        for opset in operator_sets:
            if not isinstance(opset, OperatorSet):
                raise ConfigError(
                    f"{where}: operator_sets must hold OperatorSet entries, got {type(opset).__name__}."
                )
            if opset.name in names:
                raise ConfigError(
                    f"{where}: two operator sets are named {opset.name!r}; give each a unique name."
                )
            names.add(opset.name)
            for kind in opset.kinds:
                if kind in seen:
                    raise ConfigError(
                        f"{where}: op kind {kind!r} is in operator sets {seen[kind]!r} and "
                        f"{opset.name!r}; each kind may belong to one set: remove it from one of them."
                    )
                seen[kind] = opset.name
        _set(self, "operator_sets", operator_sets)
        patterns = _as_tuple(
            f"{where}: fusing_patterns", self.fusing_patterns, "(('weighted', 'activation'),)"
        )
        patterns = tuple(
            _as_tuple(f"{where}: each fusing pattern", p, "('weighted', 'activation')") for p in patterns
        )
        for pattern in patterns:
            if len(pattern) < 2:
                raise ConfigError(f"{where}: fusing pattern {pattern!r} needs at least two operator sets.")
            missing = [p for p in pattern if p not in names]
            if missing:
                hint = _did_you_mean(str(missing[0]), names)
                raise ConfigError(
                    f"{where}: fusing pattern {pattern!r} names unknown sets {missing}.{hint} Use the names of "
                    f"operator_sets: {sorted(names, key=str)}."
                )
        _set(self, "fusing_patterns", patterns)

    def operator_set_of(self, kind: str | None) -> OperatorSet | None:
        for opset in self.operator_sets:
            if kind in opset.kinds:
                return opset
        return None

    def config_for(self, kind: str | None) -> OpQuantizationConfig:
        opset = self.operator_set_of(kind)
        return opset.config if opset is not None else self.default_config
