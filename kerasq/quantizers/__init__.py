"""Fake-quant math (pure functions) and the thin Keras layers that call it."""

from kerasq.quantizers.activation import ActivationQuantizer
from kerasq.quantizers.fake_quant import fake_quant
from kerasq.quantizers.fused_range import FusedTensorRange
from kerasq.quantizers.kernel_ops import weighted_forward
from kerasq.quantizers.wrapper import QuantizeWrapper

__all__ = ["ActivationQuantizer", "FusedTensorRange", "QuantizeWrapper", "fake_quant", "weighted_forward"]
