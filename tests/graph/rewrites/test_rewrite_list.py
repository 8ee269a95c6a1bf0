"""Every rewrite of ``REWRITES``, in the pipeline's order, on one net built to trigger each of them: it fires
(changes the graph it is given) and the rebuilt float model computes what the user's model computes."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from helpers import assert_model_untouched, assert_same_function, random_bn
from keras import layers

from kerasq.config import QuantizationConfig
from kerasq.graph import read_model
from kerasq.graph.rewrites import REWRITES, rewrite_graph


def every_rewrite_net() -> keras.Model:
    """One net, one trigger per rewrite (layer norm, conv + BN, standalone rescaling, separable conv, fused
    activation, a linear conv pair, a residual conv, a relu6 between two convs)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    x = layers.Rescaling(1 / 2.0, offset=-0.5)(inputs)  # standalone affine
    x = random_bn(layers.Conv2D(8, 3, padding="same")(x), seed=1)  # conv + BN
    x = layers.SeparableConv2D(8, 3, padding="same", activation="relu")(x)  # separable, fused activation
    x = layers.Conv2D(8, 1)(layers.Conv2D(8, 3, padding="same")(x))  # linear pair
    x = layers.Add()([x, layers.Conv2D(8, 3, padding="same")(x)])  # residual over a same-shape conv
    x = layers.Conv2D(8, 1)(layers.ReLU(max_value=6.0)(layers.Conv2D(8, 1)(x)))  # bounded ReLU between convs
    x = layers.LayerNormalization()(x)
    outputs = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _signature(graph) -> list[tuple]:
    """What a rewrite can change: the nodes, their configs and their weights."""
    return [
        (
            node.name,
            node.kind,
            repr(sorted(node.layer_config.items())),
            [float(np.sum(w)) for w in node.layer_weights],
        )
        for node in graph.nodes
    ]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return every_rewrite_net()


@pytest.mark.parametrize("index", range(len(REWRITES)), ids=[r.name for r in REWRITES])
def test_each_rewrite_fires_and_keeps_the_float_function(model, index):
    graph = read_model(model)
    for earlier in REWRITES[:index]:  # each rewrite sees the graph it sees in the pipeline
        graph = earlier.apply(graph)
    rewrite = REWRITES[index]
    rewritten = rewrite.apply(graph)
    assert _signature(rewritten) != _signature(graph), (
        f"{rewrite.name!r} left the net built to trigger it as is"
    )
    assert_same_function(model, rewritten)
    assert_model_untouched(model, rewrite.apply)


def test_rewrite_graph_applies_the_enabled_rewrites_in_order(model):
    flags = {r.enabled_by: True for r in REWRITES if r.enabled_by}
    everything = rewrite_graph(read_model(model), QuantizationConfig(**flags))
    by_hand = read_model(model)
    for rewrite in REWRITES:
        by_hand = rewrite.apply(by_hand)
    assert _signature(everything) == _signature(by_hand)
    assert_same_function(model, everything)
    off = rewrite_graph(read_model(model), QuantizationConfig(**dict.fromkeys(flags, False)))
    assert len(off.nodes) > len(everything.nodes)  # the optional collapsing rewrites did not run


def test_enabling_fields_are_boolean_config_fields():
    fields = {f.name: f for f in dataclasses.fields(QuantizationConfig)}
    for rewrite in REWRITES:
        if rewrite.enabled_by is not None:
            assert rewrite.enabled_by in fields, (
                f"{rewrite.name!r}: QuantizationConfig has no {rewrite.enabled_by!r}"
            )
            assert isinstance(getattr(QuantizationConfig(), rewrite.enabled_by), bool)
