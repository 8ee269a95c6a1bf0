"""Keras layers kerasq inserts into rewritten models (registered serializable, package "kerasq")."""

from kerasq.layers.normalization_parts import ChannelMean, InverseSqrt
from kerasq.layers.shifted_activation import ShiftedActivation

__all__ = ["ChannelMean", "InverseSqrt", "ShiftedActivation"]
