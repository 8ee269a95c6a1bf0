"""Where the bytes of a .tflite file go, and the fewest any valid file with the same tensors can hold.

A per-channel INT8 file stores, besides its constant tensors, one float32 scale and one int64 zero point per
output channel for each kernel and each bias (LiteRT refuses a file whose zero-point vector is shorter than
its scale vector). On depthwise-heavy networks those vectors are 4-6% of the file, a cost of the format
itself: ``floor`` counts the constants plus each distinct quantization vector once, so ``total / floor``
says how much a file spends on names, tables and duplicated vectors beyond what the format requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasq.export.runtime_imports import litert_schema

_VECTOR_TYPES = {"scale": np.float32, "zeroPoint": np.int64, "min": np.float32, "max": np.float32}


@dataclass(frozen=True, kw_only=True)
class FileBytes:
    """A .tflite file's bytes by what they hold.

    total: the file. constants: data of buffers that tensors read (weights, biases, constant operands).
    quantization: every distinct quantization vector (scales, zero points, min/max) once. names: tensor names.
    metadata: buffers the file's metadata entries point at (runtime version, conversion metadata).
    structure: the rest (tables, shapes, operator lists, vectors stored more than once, alignment).
    """

    total: int
    constants: int
    quantization: int
    names: int
    metadata: int

    @property
    def structure(self) -> int:
        return self.total - self.constants - self.quantization - self.names - self.metadata

    @property
    def floor(self) -> int:
        """Bytes no valid file with these constants and quantization vectors can go below."""
        return self.constants + self.quantization

    def describe(self) -> str:
        ratio = f", file / floor {self.total / self.floor:.3f}" if self.floor else ""
        return (
            f"{self.total:,} bytes = constants {self.constants:,} + quantization vectors {self.quantization:,} "
            f"+ tensor names {self.names:,} + metadata {self.metadata:,} + tables and alignment "
            f"{self.structure:,} (format floor {self.floor:,}{ratio})"
        )


def _buffer_size(buffer: Any) -> int:
    if buffer.data is not None:
        return len(buffer.data)
    return int(buffer.size) if buffer.offset > 1 else 0  # data stored after the flatbuffer (files > 2 GB)


def _distinct_vectors(quantizations: list[Any]) -> int:
    """Bytes of the distinct quantization vectors among ``quantizations``."""
    seen: set[tuple[str, bytes]] = set()
    for params in quantizations:
        for field, dtype in _VECTOR_TYPES.items():
            values = getattr(params, field)
            if values is not None and len(values):
                seen.add((field, np.ascontiguousarray(values, dtype=dtype).tobytes()))
    return sum(len(data) for _, data in seen)


def file_bytes(flatbuffer: bytes) -> FileBytes:
    """The byte breakdown of a .tflite ``flatbuffer``."""
    model = litert_schema().ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    tensors = [t for subgraph in model.subgraphs or [] for t in subgraph.tensors or []]
    metadata_buffers = {int(m.buffer) for m in model.metadata or []}
    tensor_buffers = {int(t.buffer) for t in tensors} - {0}
    buffers = model.buffers or []
    return FileBytes(
        total=len(flatbuffer),
        constants=sum(_buffer_size(buffers[b]) for b in tensor_buffers if b < len(buffers)),
        quantization=_distinct_vectors([t.quantization for t in tensors if t.quantization is not None]),
        names=sum(len(t.name or b"") for t in tensors),
        metadata=sum(_buffer_size(buffers[b]) for b in metadata_buffers if b < len(buffers)),
    )
