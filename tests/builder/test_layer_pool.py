"""The quantized model wraps the clones built for statistics (``LayerPool``): each at most once, only for an
unchanged node, with the same outputs as fresh clones."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
from keras import layers

from kerasq.builder import LayerPool, build_model
from kerasq.pipeline import prepare

IMAGES = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input(IMAGES.shape[1:])
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(image)
    return keras.Model(image, layers.Conv2D(2, 1, name="c2")(x))


def test_each_clone_is_wrapped_once_and_only_for_an_unchanged_node():
    prepared = prepare(_model(), IMAGES, None, None)
    graph, plan = prepared.graph, prepared.plan
    params = prepared.grids.params_for(plan)
    assert {"c1", "c2"} <= set(plan.weights)
    float_built = build_model(graph)
    changed = graph.with_nodes(  # c2 with another config (as a rewrite after statistics would give it)
        [
            replace(n, config={**n.layer_config, "trainable": False}) if n.name == "c2" else n
            for n in graph.nodes
        ]
    )
    pool = LayerPool(graph, float_built, set(plan.weights))
    first = build_model(changed, plan, params, pool=pool)
    second = build_model(graph, plan, params, pool=pool)  # the pool is used up for c1: fresh clones
    assert first.layers["c1"].layer is float_built.layers["c1"]
    assert first.layers["c2"].layer is not float_built.layers["c2"]  # its node changed: a new clone
    assert second.layers["c1"].layer is not float_built.layers["c1"]
    assert second.layers["c2"].layer is float_built.layers["c2"]  # unchanged here, still in the pool
    assert not {id(v) for v in first.model.weights} & {id(v) for v in second.model.weights}
    fresh = build_model(graph, plan, params).model
    want = fresh.predict(IMAGES, verbose=0)
    np.testing.assert_array_equal(first.model.predict(IMAGES, verbose=0), want)
    np.testing.assert_array_equal(second.model.predict(IMAGES, verbose=0), want)
