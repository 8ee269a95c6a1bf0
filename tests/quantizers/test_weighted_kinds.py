"""The ``WeightedKind`` records against the Keras layers they describe: class names, weight order, channel axes,
and the forward pass with substitute kernels."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasq.graph.op_kinds import op_kind
from kerasq.quantizers.weighted_kinds import WEIGHTED, kinds_with

# one layer per Keras class the records name, with its input shape
SAMPLES = {
    "Conv1D": (lambda: keras.layers.Conv1D(6, 3, padding="causal", dilation_rate=2), (9, 4)),
    "Conv2D": (lambda: keras.layers.Conv2D(6, 3, strides=2), (9, 9, 4)),
    "Conv3D": (lambda: keras.layers.Conv3D(6, 2), (5, 5, 5, 4)),
    "DepthwiseConv1D": (lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2), (9, 4)),
    "DepthwiseConv2D": (
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        (9, 9, 4),
    ),
    "SeparableConv1D": (lambda: keras.layers.SeparableConv1D(6, 3), (9, 4)),
    "SeparableConv2D": (lambda: keras.layers.SeparableConv2D(6, 3, depth_multiplier=2), (9, 9, 4)),
    "Conv1DTranspose": (lambda: keras.layers.Conv1DTranspose(6, 3, strides=2), (9, 4)),
    "Conv2DTranspose": (lambda: keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same"), (9, 9, 4)),
    "Dense": (lambda: keras.layers.Dense(6), (7, 4)),
}
CASES = [(kind, cls) for kind in WEIGHTED.values() for cls in kind.layer_classes]


def test_every_class_a_record_names_has_a_sample():
    assert sorted(SAMPLES) == sorted(cls for _, cls in CASES)


@pytest.mark.parametrize("kind, cls", CASES, ids=[cls for _, cls in CASES])
def test_record_describes_the_layer(kind, cls):
    make, shape = SAMPLES[cls]
    layer = make()
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    expected = np.asarray(layer(x))
    assert op_kind(layer) == kind.name
    names = [w.path.split("/")[-1] for w in layer.weights]
    assert names == [*kind.kernels, "bias"]  # kernels in get_weights() order, then the bias
    output_kernel = getattr(layer, kind.output_kernel)
    channels = int(np.prod([output_kernel.shape[a] for a in kind.kernels[kind.output_kernel]]))
    assert channels == expected.shape[-1]  # the output kernel's channel axes are the output channels
    kernels = {name: getattr(layer, name) for name in kind.kernels}
    got = np.asarray(kind.forward(layer, x, kernels)) + np.asarray(layer.bias)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_kinds_with_reads_a_flag_and_refuses_a_typo():
    assert kinds_with("macs_per_input_position") == ("conv_transpose",)
    assert set(kinds_with("bias_correction")) == {"conv", "depthwise_conv", "dense"}
    with pytest.raises(ValueError, match="bias_correction"):
        kinds_with("bias_corection")
