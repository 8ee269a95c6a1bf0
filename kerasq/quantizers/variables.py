"""Variables of the quantizer layers, created without TensorFlow's per-variable kernel instantiation.

``Layer.add_weight`` creates a variable inside the layer's name scope, so its TensorFlow handle op carries a
name unique to the layer (``<layer>/scale``). TensorFlow caches eager kernels by their attributes, names
included: every quantizer's variable then instantiates a new kernel (about 1.5 ms, against 0.03 ms for a
cached one), and a quantized NASNetMobile has some two thousand of them. ``layer_variable`` gives the
variable the Keras path ``add_weight`` would (``<layer>/<name>``: Keras' own name scope), but creates its
handle under one fixed TensorFlow name scope, so all quantizer variables of a shape share one kernel.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

_TF_SCOPE = "kerasq_quantizer/"  # absolute (trailing slash): the same TensorFlow name for every layer


def layer_variable(
    layer: keras.layers.Layer, name: str, shape: tuple[int, ...], value: float, trainable: bool = False
) -> keras.Variable:
    """A float32 variable of ``shape`` filled with ``value``, path ``<layer.name>/<name>`` like ``add_weight``.
    The caller assigns it to an attribute of ``layer`` (which tracks it, as ``add_weight`` does)."""
    initial = np.full(shape, value, np.float32)
    with keras.name_scope(layer.name, caller=layer), tf.name_scope(_TF_SCOPE):
        return keras.Variable(initial, shape=shape, dtype="float32", trainable=trainable, name=name)
