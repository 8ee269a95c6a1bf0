"""Turning a graph (plus chosen grids) back into a Keras model."""

from kerasq.builder.model_builder import BuiltModel, LayerPool, build_model, clone_operation

__all__ = ["BuiltModel", "LayerPool", "build_model", "clone_operation"]
