"""``ResourceUtilization``: the memory / compute figures mixed precision budgets and reports.

Definitions (all per inference of one sample, batch size 1), as MCT 2.6.1 counts them:

- ``weights_memory`` (bytes): the quantized kernels at their bit widths, ``sum(params * bits / 8)`` over every
  quantized kernel (fixed-width and configurable alike; a fraction of a byte is kept, as in MCT). Biases, the
  zero biases bias correction adds, and the weights of layers kept float do not count. A layer applied several
  times (shared, or inside a nested model called twice) has one kernel and counts once. Kernels are counted as
  the graph holds them, so a batch-norm folded into a convolution adds nothing.
- ``activation_memory`` (bytes): the peak, over the best execution order kerasq finds, of the bytes of the
  tensors alive at once, each at its bit width (float tensors at 32 bits; tensors inside a fused chain are never
  materialized and count 0). Dimensions the model leaves open (``Input((None, None, 3))``) take the calibration
  data's sample shape; with no data they are refused (``ConfigError``).
- ``total_memory``: weights memory + activation memory.
- ``bops`` (bit operations): sum over conv / depthwise / dense / transposed-conv calls of
  ``MACs * weight bits * input activation bits`` (every call of a shared layer counts).

The bytes the weights take on the device are a different figure: ``QuantizationInfo.stored_weights_bytes``
(quantized kernels bit-packed to whole bytes per kernel, plus 4 bytes per bias, int32, and per weight left
float). Budgets (``target_resource_utilization``) limit the MCT figures above.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from kerasq.errors import ConfigError

RESOURCES = ("weights_memory", "activation_memory", "total_memory", "bops")


@dataclass(frozen=True)
class ResourceUtilization:
    """Resource figures (``inf`` = unrestricted when used as a mixed-precision target)."""

    weights_memory: float = math.inf
    activation_memory: float = math.inf
    total_memory: float = math.inf
    bops: float = math.inf

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            unit = "bit operations" if f.name == "bops" else "bytes"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"ResourceUtilization.{f.name} must be a number of {unit} (inf for no limit), got {value!r}."
                )
            if math.isnan(value) or value < 0:
                raise ConfigError(
                    f"ResourceUtilization.{f.name} must be >= 0 {unit} (or inf for no limit), got {value!r}."
                )

    def restricted(self) -> dict[str, float]:
        """The finite entries: the resources a target actually limits."""
        return {name: value for name, value in asdict(self).items() if math.isfinite(value)}

    def satisfies(self, target: ResourceUtilization, rtol: float = 1e-9) -> bool:
        """True when every resource of ``self`` is within ``target``."""
        return all(getattr(self, name) <= value * (1 + rtol) for name, value in target.restricted().items())

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        parts = [f"{name}={value:,.0f}" for name, value in asdict(self).items() if math.isfinite(value)]
        return f"ResourceUtilization({', '.join(parts) or 'unrestricted'})"
