"""The file packed again: each distinct quantization vector once, short inner names; the same values and outputs."""

from __future__ import annotations

import flatbuffers
import keras
import numpy as np
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat
from kerasq.export.compact_file import compact_flatbuffer
from kerasq.export.runtimes import litert_schema, predict_litert, predict_tflm
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
    again = compact_flatbuffer(shared)
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


def test_inner_tensor_names_keep_their_first_op_and_the_edges_keep_theirs():
    inputs = keras.Input((6, 6, 8), name="pixels")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(1).normal(size=(16, 6, 6, 8)).astype("float32")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, data, target_platform_capabilities=kerasq.get_target_platform_capabilities("tflite")
    )
    exported = convert(q_model, QuantizationFormat.INT8).flatbuffer
    schema = litert_schema()
    model_t = schema.ModelT.InitFromPackedBuf(bytearray(exported), 0)
    subgraph = model_t.subgraphs[0]
    edges = {int(i) for i in list(subgraph.inputs) + list(subgraph.outputs)}
    inner = [i for i in range(len(subgraph.tensors)) if i not in edges]
    assert all(b";" not in subgraph.tensors[i].name for i in inner)  # the exporter compacted them
    # Give the tensors fused names as the converter writes them; two inner ones start with the same op.
    for i, tensor in enumerate(subgraph.tensors):
        tensor.name = f"op_{i};fused_{i}/BiasAdd;fused_{i}/Const".encode()
    subgraph.tensors[inner[1]].name = f"op_{inner[0]};other".encode()
    subgraph.tensors[inner[2]].name = f"op_{inner[0]};other".encode()
    fused = flatbuffers_pack(model_t)
    compact = compact_flatbuffer(fused)
    names = [t.name for t in schema.ModelT.InitFromPackedBuf(bytearray(compact), 0).subgraphs[0].tensors]
    for i in edges:
        assert names[i] == f"op_{i};fused_{i}/BiasAdd;fused_{i}/Const".encode()
    assert names[inner[0]] == f"op_{inner[0]}".encode()
    assert names[inner[1]] == b"other"  # its first op names another tensor: the next one
    assert names[inner[2]] == f"op_{inner[0]};other".encode()  # both ops name other tensors: kept whole
    assert all(names[i] == f"op_{i}".encode() for i in inner[3:])
    assert len(compact) < len(fused) - 20 * len(inner[3:])
    np.testing.assert_array_equal(predict_litert(fused, data[:4]), predict_litert(compact, data[:4]))
