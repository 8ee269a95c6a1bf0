"""The 8-bit grid for a tensor inside a fused chain: the whole observed range, no clipping.

The platform never stores such a tensor (a conv output feeding its swish, say), but a runtime with other
fusing rules does, and there it stands in for a float value the Keras model computes exactly. Clipping it,
as an error search on the histogram would for rare large values, changes exactly the outputs the Keras model
still represents: on a squeeze-and-excite net, an MSE-searched grid clipped a depthwise output at 7.5 where
the hard-swish grid after it reaches 16, and the file was 16 output steps off there. So the grid spans the
observed range (measured on that net: top-1 agreement of the file with the Keras model 98.1% with min/max
grids, 97.7% with MSE-searched ones, 97.0% with grids searched for the error after the consumer).
"""

from __future__ import annotations

import numpy as np

from kerasq.core.enums import QuantizationMethod
from kerasq.params.quant_params import QuantParams, uniform_grid
from kerasq.statistics.histogram import TensorStats


def fused_tensor_params(stats: TensorStats) -> QuantParams:
    """The uniform 8-bit grid over ``[min(observed min, 0), max(observed max, 0)]``."""
    scale, zero_point, qmin, qmax = uniform_grid(np.array(stats.min), np.array(stats.max), 8)
    return QuantParams(
        scale=np.asarray(scale, np.float32), zero_point=np.asarray(zero_point, np.int32), qmin=qmin, qmax=qmax,
        n_bits=8, method=QuantizationMethod.UNIFORM, signed=bool(stats.min < 0),
    )  # fmt: skip
