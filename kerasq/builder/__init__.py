"""Turning a graph (plus chosen grids) back into a Keras model."""

from kerasq.builder.model_builder import BuiltModel, build_model, clone_operation

__all__ = ["BuiltModel", "build_model", "clone_operation"]
