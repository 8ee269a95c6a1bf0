"""The quantization plan: shared grids of concatenations stay resolvable through nested concatenations."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

import kerasq
from kerasq.core import QuantizationConfig
from kerasq.graph import read_model
from kerasq.plan import FixedGrid, grid_source
from kerasq.platform.assign import assign_quantization


def _nested_concat() -> keras.Model:
    """InceptionV3's mixed blocks: a concatenation whose output is read only by another concatenation."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3))
    a, b, c = (layers.Conv2D(4, 3, padding="same", name=n)(image) for n in ("a", "b", "c"))
    inner = layers.Concatenate(name="inner")([a, b])
    outer = layers.Concatenate(name="outer")([inner, c])
    return keras.Model(image, layers.Conv2D(2, 1, name="head")(outer))


def test_inputs_of_a_nested_concat_take_the_outer_grid():
    tpc = kerasq.get_target_platform_capabilities("tflite")
    graph = read_model(_nested_concat())
    plan = assign_quantization(graph, tpc, QuantizationConfig())
    out = {n.name: n.outputs[0] for n in graph.nodes}
    for name in ("a", "b", "c", "inner"):
        assert plan.activations[out[name]].shared_owner == out["outer"], name
        assert grid_source(plan, out[name]) == out["outer"]
    owners = {s.shared_owner for s in plan.activations.values()} - {None}
    assert all(plan.activations[t].shared_owner is None for t in owners)


def test_nested_concat_quantizes_on_one_grid():
    x = np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 3)).astype("float32")
    tpc = kerasq.get_target_platform_capabilities("tflite")
    _, info = kerasq.ptq.keras_post_training_quantization(
        _nested_concat(), x, target_platform_capabilities=tpc
    )
    outer = info.layers["outer"].activation
    for name in ("a", "b", "c", "inner"):
        assert info.layers[name].activation.scale == outer.scale
        assert info.layers[name].activation.zero_point == outer.zero_point


def _dense_block() -> keras.Model:
    """DenseNet: ``x`` feeds a concatenation and also a conv; the concatenation feeds the next one."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="x")(image)
    y = layers.Conv2D(4, 3, padding="same", name="y")(x)
    first = layers.Concatenate(name="first")([x, y])
    z = layers.Conv2D(4, 1, name="z")(first)
    return keras.Model(image, layers.Concatenate(name="second")([first, z]))


def test_tflite_concat_operands_read_elsewhere_take_the_concat_grid_too():
    """TFLite's converter gives a concatenation and its operands one scale even when an operand is read by
    other ops: the plan must agree, or the file's tensors sit on other grids than the Keras model's."""
    graph = read_model(_dense_block())
    out = {n.name: n.outputs[0] for n in graph.nodes}
    tflite = assign_quantization(
        graph, kerasq.get_target_platform_capabilities("tflite"), QuantizationConfig()
    )
    for name in ("x", "y", "first", "z"):
        assert grid_source(tflite, out[name]) == out["second"], name
    # an optional unification (imx500's concat_threshold_update) still leaves operands read elsewhere alone
    imx = assign_quantization(
        graph,
        kerasq.get_target_platform_capabilities("imx500"),
        QuantizationConfig(concat_threshold_update=True),
    )
    assert grid_source(imx, out["x"]) == out["x"] and grid_source(imx, out["first"]) == out["first"]
    assert grid_source(imx, out["z"]) == out["second"]


def test_tflite_average_pool_output_is_rounded_onto_its_input_grid():
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3))
    x = layers.MaxPooling2D(2, name="max")(
        layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(image)
    )
    pooled = layers.AveragePooling2D(3, strides=1, padding="same", name="avg")(x)
    graph = read_model(keras.Model(image, layers.Conv2D(2, 1)(pooled)))
    out = {n.name: n.outputs[0] for n in graph.nodes}
    plan = assign_quantization(graph, kerasq.get_target_platform_capabilities("tflite"), QuantizationConfig())
    relu = out["c"]  # conv + ReLU, one node before split_activations
    for name in ("max", "avg"):  # quantizers on the ReLU's grid: the mean is rounded, the max is unchanged
        assert plan.activations[out[name]].shared_owner == relu, name
    imx = assign_quantization(graph, kerasq.get_target_platform_capabilities("imx500"), QuantizationConfig())
    assert out["max"] not in imx.activations and imx.activations[out["avg"]].shared_owner is None  # own grid


def test_fixed_ranges_keep_their_grid_at_a_concat():
    """A sigmoid's fixed output grid (and an average pool on it, which shares that grid) is not replaced by the
    concatenation's: only the searched input joins the concat's grid."""
    image = keras.Input((8, 8, 3))
    sig = layers.Activation("sigmoid", name="sig")(layers.Conv2D(4, 1, name="c1")(image))
    pooled = layers.AveragePooling2D(1, name="pool")(
        layers.Activation("sigmoid", name="sig2")(layers.Conv2D(4, 1, name="c2")(image))
    )
    searched = layers.Conv2D(4, 1, name="c3")(image)
    outer = layers.Concatenate(name="cat")([sig, pooled, searched])
    graph = read_model(keras.Model(image, layers.Conv2D(2, 1, name="head")(outer)))
    plan = assign_quantization(graph, kerasq.get_target_platform_capabilities("tflite"), QuantizationConfig())
    out = {n.name: n.outputs[0] for n in graph.nodes}
    assert plan.activations[out["sig"]].grid == FixedGrid(lo=0.0, hi=255 / 256, imposed_by="platform")
    assert plan.activations[out["pool"]].shared_owner == out["sig2"]
    assert plan.activations[out["c3"]].shared_owner == out["cat"]
    assert grid_source(plan, out["sig"]) == out["sig"] and grid_source(plan, out["pool"]) == out["sig2"]
