"""Canonical names ("kinds") for the operations kerasq understands.

Platforms (TPCs) refer to these kinds, so a user's custom TPC never depends on Keras class names.
A node whose kind is ``None`` is unknown to kerasq and is kept in float.
"""

from __future__ import annotations

import keras

from kerasq.quantizers.weighted_kinds import WEIGHTED

WEIGHTED_KINDS = tuple(WEIGHTED)  # every kind with weights kerasq quantizes (``WeightedKind``)

# Keras layer class name -> kind (the weighted ones from their ``WeightedKind`` records).
_LAYER_KINDS = {
    **{cls: name for name, kind in WEIGHTED.items() for cls in kind.layer_classes},
    "BatchNormalization": "batch_norm",
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "PReLU": "prelu",
    "ELU": "elu",
    "Softmax": "softmax",
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Concatenate": "concat",
    "Average": "average",
    "Maximum": "maximum",
    "Minimum": "minimum",
    "AveragePooling1D": "avg_pool",
    "AveragePooling2D": "avg_pool",
    "MaxPooling1D": "max_pool",
    "MaxPooling2D": "max_pool",
    "GlobalAveragePooling1D": "global_avg_pool",
    "GlobalAveragePooling2D": "global_avg_pool",
    "GlobalMaxPooling1D": "global_max_pool",
    "GlobalMaxPooling2D": "global_max_pool",
    "Flatten": "flatten",
    "Reshape": "reshape",
    "Permute": "permute",
    "Dropout": "dropout",
    "SpatialDropout1D": "dropout",
    "SpatialDropout2D": "dropout",
    "GaussianNoise": "dropout",
    "GaussianDropout": "dropout",
    "ZeroPadding1D": "zero_padding",
    "ZeroPadding2D": "zero_padding",
    "Cropping1D": "cropping",
    "Cropping2D": "cropping",
    "UpSampling1D": "upsampling",
    "UpSampling2D": "upsampling",
    "Rescaling": "rescaling",
    "Normalization": "normalization",
    "Identity": "identity",
    "ChannelMean": "mean",  # kerasq.layers: the parts of a split layer normalization
    "InverseSqrt": "rsqrt",
}

# Names of activation functions (``activation=`` arguments and ``Activation`` layers) -> kind.
_ACTIVATION_KINDS = {
    "linear": "identity",
    "relu": "relu",
    "relu6": "relu6",
    "swish": "swish",
    "silu": "swish",
    "hard_swish": "hard_swish",
    "hard_silu": "hard_swish",
    "leaky_relu": "leaky_relu",
    "elu": "elu",
    "gelu": "gelu",
    "sigmoid": "sigmoid",
    "hard_sigmoid": "hard_sigmoid",
    "tanh": "tanh",
    "softmax": "softmax",
    "softplus": "softplus",
    "selu": "selu",
}

# ``keras.ops`` operation class names -> kind.
_OPS_KINDS = {
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Maximum": "maximum",
    "Minimum": "minimum",
    "Concatenate": "concat",
    "Reshape": "reshape",
    "Transpose": "permute",
    "ExpandDims": "reshape",
    "Squeeze": "reshape",
    "Relu": "relu",
    "Relu6": "relu6",
    "Silu": "swish",
    "HardSilu": "hard_swish",
    "LeakyRelu": "leaky_relu",
    "Elu": "elu",
    "Gelu": "gelu",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "hard_sigmoid",
    "Tanh": "tanh",
    "Softmax": "softmax",
    "Mean": "mean",
}


def activation_kind(activation: object) -> str | None:
    """Kind of an activation callable (``layer.activation``), ``None`` if unknown."""
    name = getattr(activation, "__name__", None)
    if name is None:
        return None
    return _ACTIVATION_KINDS.get(name)


def op_kind(op: keras.Operation) -> str | None:
    """Kind of a graph operation (layer or ``keras.ops`` call); ``None`` when kerasq does not know it."""
    cls_name = type(op).__name__
    if isinstance(op, keras.layers.Layer):
        if cls_name == "Activation":
            return activation_kind(op.activation)
        if cls_name == "ReLU" and (op.max_value == 6.0 and not op.negative_slope and not op.threshold):
            return "relu6"
        kind = _LAYER_KINDS.get(cls_name)
        if kind is not None and type(op).__module__.startswith("keras"):
            return kind
        # Subclasses of known layers may override ``call``; only trust exact Keras classes.
        return None
    return _OPS_KINDS.get(cls_name)


def is_weighted(kind: str | None) -> bool:
    return kind in WEIGHTED_KINDS
