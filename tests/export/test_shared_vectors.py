"""Each distinct quantization vector is stored once: smaller files, the same values, the same outputs."""

from __future__ import annotations

import flatbuffers
import keras
import numpy as np
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat
from kerasq.export.runtimes import litert_schema, predict_litert, predict_tflm
from kerasq.export.shared_vectors import share_quantization_vectors
from kerasq.export.tflite import convert

CHANNELS, DEPTH = 64, 4


def _quantization(flatbuffer: bytes) -> list[tuple]:
    schema = litert_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    found = []
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        fields = (None,) if q is None else (q.scale, q.zeroPoint, q.min, q.max, q.quantizedDimension)
        found.append((tensor.name, *[None if f is None else np.asarray(f).tolist() for f in fields]))
    return found


def test_zero_points_are_stored_once_and_nothing_else_changes():
    inputs = keras.Input((8, 8, CHANNELS))
    x = inputs
    for _ in range(DEPTH):
        x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = layers.Conv2D(CHANNELS, 1, activation="relu")(x)
    model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(0).normal(size=(32, 8, 8, CHANNELS)).astype("float32")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, data, target_platform_capabilities=kerasq.get_target_platform_capabilities("tflite")
    )
    shared = convert(q_model, QuantizationFormat.INT8).flatbuffer
    again = share_quantization_vectors(shared)
    assert len(again) == len(shared)  # already shared: packing again finds nothing more
    # 2 * DEPTH per-channel layers, each with 2 zero-point vectors of CHANNELS int64 (kernel, bias), + the dense
    schema = litert_schema()
    model_t = schema.ModelT.InitFromPackedBuf(bytearray(shared), 0)
    plain = flatbuffers_pack(model_t)
    assert len(plain) - len(shared) >= (4 * DEPTH - 1) * CHANNELS * 8
    assert _quantization(plain) == _quantization(shared)
    x = data[:4]
    np.testing.assert_array_equal(predict_litert(plain, x), predict_litert(shared, x))
    np.testing.assert_array_equal(predict_tflm(plain, x), predict_tflm(shared, x))


def flatbuffers_pack(model_t) -> bytes:
    """The file packed by the schema's own code: one copy of every vector per tensor."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
