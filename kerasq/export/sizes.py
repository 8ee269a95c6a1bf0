"""Storage arithmetic for exported models whose kernels use fewer than 8 bits."""

from __future__ import annotations

import keras

from kerasq.quantizers import QuantizeWrapper
from kerasq.resources.utilization import kernel_bytes


def sub_byte_savings(q_model: keras.Model) -> int:
    """Bytes saved if every kernel narrower than 8 bits were bit-packed instead of stored one per int8 byte."""
    saved = 0
    for layer in q_model.layers:
        if not isinstance(layer, QuantizeWrapper):
            continue
        for name, spec in layer.kernel_quantizers.items():
            if spec.n_bits < 8:
                size = int(getattr(layer.layer, name).shape.num_elements())
                saved += size - int(kernel_bytes(size, spec.n_bits, packed=True))
    return saved


def packed_size(q_model: keras.Model, file_bytes: int) -> int:
    """Size of an INT8 flatbuffer of ``q_model`` with its sub-8-bit kernels packed (4-bit: two per byte)."""
    return file_bytes - sub_byte_savings(q_model)
