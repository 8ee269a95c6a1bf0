"""The 8-bit grid for a tensor inside a fused chain: the whole observed range, no clipping.

The platform never stores such a tensor (a conv output feeding its swish, say), but a runtime with other
fusing rules does, and there it stands in for a float value the Keras model computes exactly. Clipping it,
as an error search on the histogram would for rare large values, changes exactly the outputs the Keras model
still represents: on a squeeze-and-excite net, an MSE-searched grid clipped a depthwise output at 7.5 where
the hard-swish grid after it reaches 16, and the file was 16 output steps off there. So the grid spans the
observed range (measured on that net: top-1 agreement of the file with the Keras model 98.1% with min/max
grids, 97.7% with MSE-searched ones, 97.0% with grids searched for the error after the consumer).

The one clipping that is free: where the consumer maps everything beyond a bound to the same value
(hard-swish is 0 below -3), the grid stops at that bound and spends its 256 levels on the values that matter.
"""

from __future__ import annotations

import numpy as np

from kerasq.config.enums import QuantizationMethod
from kerasq.quantizers.grid import QuantParams, uniform_grid
from kerasq.statistics.histogram import TensorStats

# consumer kind -> (low, high): the consumer's output is constant below low and above high
FLAT_BEYOND = {
    "hard_swish": (-3.0, np.inf),
    "hard_sigmoid": (-3.0, 3.0),
    "relu": (0.0, np.inf),
    "relu6": (0.0, 6.0),
}


def fused_tensor_params(stats: TensorStats, consumer: str | None = None) -> QuantParams:
    """The uniform 8-bit grid over ``[min(observed min, 0), max(observed max, 0)]``, clipped where
    ``consumer`` (the kind of the op reading the tensor) is flat beyond a bound (``FLAT_BEYOND``)."""
    low, high = FLAT_BEYOND.get(consumer or "", (-np.inf, np.inf))
    lo, hi = max(stats.min, low), min(stats.max, high)
    if lo >= hi:  # the whole observed range is on one flat side: keep it, the values do not matter
        lo, hi = stats.min, stats.max
    scale, zero_point, qmin, qmax = uniform_grid(np.array(lo), np.array(hi), 8)
    return QuantParams(
        scale=np.asarray(scale, np.float32), zero_point=np.asarray(zero_point, np.int32), qmin=qmin, qmax=qmax,
        n_bits=8, method=QuantizationMethod.UNIFORM, signed=bool(lo < 0),
    )  # fmt: skip
