"""TFLite's int16x8 scheme (16-bit activations, 8-bit weights): the bias repair the converter needs.

From a fake-quant graph, TF 2.21's converter writes int16x8 convolutions and fully connected layers with int32
bias tensors, but LiteRT's int16x8 kernels read their bias as int64. The kernel then reads past the end of the
int32 data, so it computes wrong results for convolutions and rejects depthwise ones. (The converter's own
int64-bias switch works only for its calibration-based quantization, not for fake-quant graphs.) The repair
rewrites each such bias as int64 with the same values and scale, using the LiteRT flatbuffer schema.
"""

from __future__ import annotations

import flatbuffers
import numpy as np

from kerasq.export.runtimes import litert_schema

_BIASED_OPS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
# op -> index of its bias input


def widen_int16_biases(flatbuffer: bytes) -> tuple[bytes, int]:
    """The flatbuffer with the int32 biases of int16-input ops stored as int64; and how many were widened."""
    schema = litert_schema()
    biased = {getattr(schema.BuiltinOperator, op): position for op, position in _BIASED_OPS.items()}
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    widened = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            position = biased.get(codes[op.opcodeIndex])
            if position is None or len(op.inputs) <= position or op.inputs[position] < 0:
                continue
            if subgraph.tensors[op.inputs[0]].type != schema.TensorType.INT16:
                continue
            bias = subgraph.tensors[op.inputs[position]]
            if bias.type != schema.TensorType.INT32:
                continue
            buffer = model.buffers[bias.buffer]
            values = np.frombuffer(bytes(bytearray(buffer.data)), np.int32).astype(np.int64)
            buffer.data = np.frombuffer(values.tobytes(), np.uint8)
            bias.type = schema.TensorType.INT64
            widened += 1
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), widened
