"""Target platform capabilities (TPC): what a device can run, declared as data.

A TPC maps operator sets (groups of op kinds, see ``kerasq.graph.op_kinds``) to quantization options and
lists fusing patterns (chains whose intermediate outputs the device never materializes, so they are not
quantized). Users build their own by instantiating these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kerasq.core.enums import QuantizationMethod

_SIGNEDNESS = ("auto", "signed", "unsigned")


def _check_bits(owner: str, name: str, bits: object) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"{owner}.{name} must be an integer in 2..16, got {bits!r}.")


@dataclass(frozen=True)
class OpQuantizationConfig:
    """Quantization options for one operator set.

    Attributes:
        activation_method / activation_n_bits: grid of the op's output tensor.
        enable_activation_quantization: False keeps the output in float.
        quantization_preserving: the output reuses its input's grid (reshape, max-pool, ...): no new quantizer.
        signedness: "auto" (signed iff negative values are observed), "signed" or "unsigned".
        weights_method / weights_n_bits / weights_per_channel / weights_narrow_range: kernel grid.
        enable_weights_quantization: False keeps kernels in float.
        weights_bit_candidates / activation_bit_candidates: widths mixed precision may choose from
            (empty means just the default width).
        inputs_share_output_grid: the op's inputs take its output grid, whatever else reads them (TFLite's
            converter gives a concatenation and all its operands one scale).
        output_on_input_grid: with ``quantization_preserving``, the op rounds its output onto its input's
            grid (TFLite's int8 average pooling keeps the input scale but rounds each mean), so a quantizer on
            the input's grid follows it.
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
            if not isinstance(getattr(self, name), QuantizationMethod):
                raise ValueError(f"{owner}.{name} must be a QuantizationMethod, got {getattr(self, name)!r}.")
        _check_bits(owner, "activation_n_bits", self.activation_n_bits)
        _check_bits(owner, "weights_n_bits", self.weights_n_bits)
        if self.signedness not in _SIGNEDNESS:
            raise ValueError(f"{owner}.signedness must be one of {_SIGNEDNESS}, got {self.signedness!r}.")
        for name in ("weights_bit_candidates", "activation_bit_candidates"):
            for bits in getattr(self, name):
                _check_bits(owner, name, bits)
        fixed = self.fixed_output_range
        if fixed is not None and not (len(fixed) == 2 and fixed[0] <= 0 <= fixed[1] and fixed[0] < fixed[1]):
            raise ValueError(
                f"{owner}.fixed_output_range must be (lo, hi) with lo <= 0 <= hi, got {fixed!r}."
            )

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
        seen: dict[str, str] = {}
        for opset in self.operator_sets:
            for kind in opset.kinds:
                if kind in seen:
                    raise ValueError(
                        f"TPC {self.name!r}: op kind {kind!r} is in operator sets {seen[kind]!r} and "
                        f"{opset.name!r}; each kind may belong to one set."
                    )
                seen[kind] = opset.name
        names = {opset.name for opset in self.operator_sets}
        for pattern in self.fusing_patterns:
            if len(pattern) < 2:
                raise ValueError(
                    f"TPC {self.name!r}: fusing pattern {pattern!r} needs at least two operator sets."
                )
            missing = [p for p in pattern if p not in names]
            if missing:
                raise ValueError(
                    f"TPC {self.name!r}: fusing pattern {pattern!r} names unknown sets {missing}."
                )

    def operator_set_of(self, kind: str | None) -> OperatorSet | None:
        for opset in self.operator_sets:
            if kind in opset.kinds:
                return opset
        return None

    def config_for(self, kind: str | None) -> OpQuantizationConfig:
        opset = self.operator_set_of(kind)
        return opset.config if opset is not None else self.default_config
