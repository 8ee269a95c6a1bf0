"""The quantization plan: shared grids of concatenations stay resolvable through nested concatenations."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

import kerasq
from kerasq.core import QuantizationConfig
from kerasq.graph import read_model
from kerasq.platform.assign import assign_quantization, grid_source


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
        assert plan.activations[out[name]].shares_grid_of == out["outer"], name
        assert grid_source(plan, out[name]) == out["outer"]
    owners = {s.shares_grid_of for s in plan.activations.values()} - {None}
    assert all(plan.activations[t].shares_grid_of is None for t in owners)


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
