"""A .tflite file's bytes by what they hold, and the format's floor."""

from __future__ import annotations

import flatbuffers
import keras
import numpy as np
import pytest
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat
from kerasq.export.file_bytes import file_bytes
from kerasq.export.runtimes import litert_schema
from kerasq.export.tflite import convert

CHANNELS = 48


@pytest.fixture(scope="module")
def shared_file() -> bytes:
    inputs = keras.Input((6, 6, CHANNELS))
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(CHANNELS, 1, activation="relu")(x)
    model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(0).normal(size=(32, 6, 6, CHANNELS)).astype("float32")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, data, target_platform_capabilities=kerasq.get_target_platform_capabilities("tflite")
    )
    return convert(q_model, QuantizationFormat.INT8).flatbuffer


def _repacked_without_sharing(flatbuffer: bytes) -> bytes:
    model_t = litert_schema().ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_constants_are_the_int8_kernels_and_int32_biases(shared_file):
    found = file_bytes(shared_file)
    kernels = 3 * 3 * CHANNELS + CHANNELS * CHANNELS + CHANNELS * 10  # int8, one byte each
    biases = 4 * (CHANNELS + CHANNELS + 10)  # int32
    # The converter may add a constant shape operand or two (reshape / mean axes); nothing else.
    assert kernels + biases <= found.constants <= kernels + biases + 64


def test_quantization_counts_each_distinct_vector_once(shared_file):
    found = file_bytes(shared_file)
    # Three per-channel layers: kernel and bias scales (float32) each; the zero vectors (int64) of length
    # CHANNELS once and of length 10 once; then a handful of per-tensor scalars.
    per_channel = 4 * (2 * CHANNELS + 2 * CHANNELS + 2 * 10) + 8 * (CHANNELS + 10)
    assert per_channel <= found.quantization <= per_channel + 12 * 16


def test_the_parts_add_up_and_sharing_changes_the_total_not_the_floor(shared_file):
    shared = file_bytes(shared_file)
    plain = file_bytes(_repacked_without_sharing(shared_file))
    for found in (shared, plain):
        assert found.structure > 0
        assert found.constants + found.quantization + found.names + found.metadata + found.structure == (
            found.total
        )
    assert plain.floor == shared.floor
    # Unshared: the kernel's and bias's zero vectors repeat for each of the three layers.
    assert plain.total - shared.total >= 8 * (2 * CHANNELS + 10)
    assert shared.names > 0 and shared.metadata > 0
    assert "format floor" in shared.describe()
