"""Pack a .tflite file again without the bytes no reader needs: repeated quantization vectors, long names.

- A per-channel quantized layer carries four vectors of its output-channel count C in the flatbuffer: the
  kernel's scales (float32) and zero points (int64), and the bias's scales and zero points. Both zero-point
  vectors are all zeros (symmetric int8 weights, int32 biases), so 16 of the 24 bytes per channel repeat a
  vector stored elsewhere: 0.1-0.2 bytes per parameter on depthwise-heavy networks (MobileNetV2,
  EfficientNet, DenseNet's lowered batch normalizations). A flatbuffer table may point at any vector already
  written, so each distinct vector is stored once.
- The converter names a tensor after every TensorFlow op fused into it, joined by ';' (200 bytes per tensor
  on NASNetMobile, 5% of its file). An inner tensor keeps the first of those names that no other tensor has (the
  op that produced it, usually); the model's inputs and outputs keep theirs.

Every reader (LiteRT, TFLM, the converter's own tools) sees the same ops, shapes and values.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np

from kerasq.export.runtime_imports import litert_schema

_FIELDS = {"min": np.float32, "max": np.float32, "scale": np.float32, "zeroPoint": np.int64}


class _SharedPack:
    """Packs one ``QuantizationParametersT`` reusing vectors already written to the same builder."""

    def __init__(self, params: Any, written: dict[tuple[str, bytes], int], schema: Any) -> None:
        self.params, self.written, self.schema = params, written, schema

    def _vector(self, builder: flatbuffers.Builder, field: str) -> int | None:
        values = getattr(self.params, field)
        if values is None:
            return None
        array = np.ascontiguousarray(values, dtype=_FIELDS[field])
        key = (field, array.tobytes())
        if key not in self.written:
            self.written[key] = builder.CreateNumpyVector(array)
        return self.written[key]

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - the name TensorT.Pack calls
        s, p = self.schema, self.params
        vectors = {field: self._vector(builder, field) for field in _FIELDS}
        details = p.details.Pack(builder) if p.details is not None else None
        s.QuantizationParametersStart(builder)
        adders = {"min": s.QuantizationParametersAddMin, "max": s.QuantizationParametersAddMax,
                  "scale": s.QuantizationParametersAddScale, "zeroPoint": s.QuantizationParametersAddZeroPoint}  # fmt: skip
        for field, offset in vectors.items():
            if offset is not None:
                adders[field](builder, offset)
        s.QuantizationParametersAddDetailsType(builder, p.detailsType)
        if details is not None:
            s.QuantizationParametersAddDetails(builder, details)
        s.QuantizationParametersAddQuantizedDimension(builder, p.quantizedDimension)
        return s.QuantizationParametersEnd(builder)


def _short_names(subgraph: Any) -> None:
    """Each inner tensor of ``subgraph`` named by the first op of its fused name that no other tensor is
    named by (its whole name when every one is)."""
    edges = {int(i) for part in (subgraph.inputs, subgraph.outputs) if part is not None for i in part}
    taken = {bytes(t.name or b"") for t in subgraph.tensors}
    for index, tensor in enumerate(subgraph.tensors):
        name = bytes(tensor.name or b"")
        free = [op for op in name.split(b";") if op and op not in taken]
        if index in edges or b";" not in name or not free:
            continue
        taken.add(free[0])
        tensor.name = free[0]


def compact_flatbuffer(flatbuffer: bytes) -> bytes:
    """``flatbuffer`` with every distinct quantization vector (scales, zero points, min, max) stored once and
    inner tensors' fused names cut to their first op."""
    schema = litert_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    written: dict[tuple[str, bytes], int] = {}
    for subgraph in model.subgraphs:
        _short_names(subgraph)
        for tensor in subgraph.tensors:
            if tensor.quantization is not None:
                tensor.quantization = _SharedPack(tensor.quantization, written, schema)
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
