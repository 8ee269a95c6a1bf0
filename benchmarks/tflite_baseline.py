"""The stock TensorFlow Lite converter: float and full-integer (int8) post-training quantization."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    """A converter for a Keras 3 model, via its SavedModel export (the path TF 2.21 supports)."""
    tmp = tempfile.mkdtemp(prefix="kerasq_tflite_")
    model.export(tmp, format="tf_saved_model", verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(tmp)


def float_tflite(model: keras.Model) -> bytes:
    return _converter(model).convert()


def stock_tflite_int8(model: keras.Model, representative: Callable[[], Iterator[list[np.ndarray]]]) -> bytes:
    """Full-integer PTQ by the TFLite converter, calibrated on the same batches kerasq sees.

    Inputs and outputs stay float32 (quantize/dequantize at the model edges) so accuracy is measured on the
    same float images as the Keras models; every op inside is int8.
    """
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def samples() -> Iterator[list[np.ndarray]]:
        for (batch,) in representative():
            for i in range(len(batch)):
                yield [batch[i : i + 1].astype(np.float32)]

    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()
