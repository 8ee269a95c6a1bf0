"""Forward passes of weighted layers with substitute kernels (the wrapped layer's variables stay as they are).

Each kind's function (``kerasq.quantizers.weighted_kinds``) mirrors the Keras layer's own ``call`` but takes the
kernels as arguments, so a wrapper can feed fake-quantized kernels through the exact same computation.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasq.quantizers.weighted_kinds import WEIGHTED, Forward

# kind -> the layer's computation with substitute kernels (``WeightedKind.forward``)
LINEAR_OPS: dict[str, Forward] = {name: kind.forward for name, kind in WEIGHTED.items()}


def weighted_forward(
    kind: str, layer: keras.layers.Layer, x: Any, kernels: dict[str, Any], bias: Any = None
) -> Any:
    """``layer``'s output computed with ``kernels`` (and ``bias``, if given) in place of its own."""
    y = LINEAR_OPS[kind](layer, x, kernels)
    bias = getattr(layer, "bias", None) if bias is None else bias
    if bias is not None:
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))
        y = ops.add(y, bias)
    if layer.activation is not None:
        y = layer.activation(y)
    return y
