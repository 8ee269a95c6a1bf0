"""TensorFlow Lite Micro from Python: the reference kernels and the static tensor arena microcontrollers run a
file with.

TFLM runs batch 1 (shapes are fixed in the file), so ``predict_tflm`` loops over samples; ``tflm_arena_bytes``
is the arena the file needs, read from TFLM's recording allocator. Every file is checked
(``check_tflite_flatbuffer``) before TFLM's C++ code reads it; on Linux, loading it and one inference on zeros
run first in a forked child, so a crash there becomes a ``TFLMError`` instead of killing the process. TFLM's
failures carry its own log (the op without a kernel, the bytes missing).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from kerasq.errors import DataError, KerasqError
from kerasq.export.child_process import run_in_child
from kerasq.export.runtime_imports import tflm_runtime_module
from kerasq.export.tflite_file import InvalidTFLiteFileError, check_tflite_flatbuffer, live_bytes


class TFLMError(KerasqError, RuntimeError):
    """TensorFlow Lite Micro could not load or run a file; ``log`` holds TFLM's own messages."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Capture what C/C++ code writes to file descriptor 2 (TFLM's MicroPrintf) into the yielded list."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


_ARENA_SHORT = ("Failed to allocate", "Failed to resize buffer", "missing:")
_MAX_ARENA = 1 << 30


def _tflm_reason(log: str, err: Exception) -> str:
    op = re.search(r"Didn't find op for builtin opcode '([^']+)'", log)
    if op:
        return f"TFLite Micro has no kernel for the {op.group(1)} op in this file"
    node = re.search(r"Node (\S+) \(number (\d+)\) failed to (prepare|invoke)", log)
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    detail = "; ".join(dict.fromkeys(lines[:6])) or str(err)
    if node:
        return (
            f"TFLite Micro failed to {node.group(3)} op {node.group(1)} (operator {node.group(2)}): {detail}"
        )
    if any(s in log for s in _ARENA_SHORT):
        return f"the tensor arena is too small: {detail}"
    return detail


def _arena_guess(model: Any) -> int:
    return max(64 * 1024, 2 * int(live_bytes(model).max(initial=0)) + 32 * 1024)


def _tflm_interpreter(flatbuffer: bytes, arena_size: int | None = None) -> tuple[Any, Any]:
    """A TFLM interpreter with its tensors allocated, and the parsed model (checked before TFLM reads it).

    Without ``arena_size`` the arena starts at twice the file's peak live-tensor bytes plus 32 KiB and grows
    (x4, up to 1 GiB) while TFLM reports it too small.
    """
    tflm_runtime_module()
    data = bytes(flatbuffer)
    model = check_tflite_flatbuffer(data)
    key = ("tflm", hashlib.sha256(data).digest(), arena_size)
    crashed = run_in_child(key, lambda: _invoke_on_zeros(_load_tflm(data, model, arena_size), model))
    if crashed:
        raise TFLMError(
            f"TensorFlow Lite Micro crashed ({crashed}) loading or running this file on zeros in a child "
            "process; the file passes kerasq's checks, but TFLM cannot run it (corrupted op parameters or "
            "quantization?)"
        )
    return _load_tflm(data, model, arena_size), model


def _invoke_on_zeros(interpreter: Any, model: Any) -> Any:
    """One inference on zeros; ``TFLMError`` with TFLM's messages if it fails. Returns the interpreter."""
    n_inputs = len([] if model.subgraphs[0].inputs is None else model.subgraphs[0].inputs)
    with _native_stderr() as log:
        try:
            for i in range(n_inputs):
                details = interpreter.get_input_details(i)
                interpreter.set_input(np.zeros([int(d) for d in details["shape"]], details["dtype"]), i)
            if n_inputs:
                interpreter.invoke()
            error = None
        except RuntimeError as err:
            error = err
    if error is not None:
        text = "".join(log)
        raise TFLMError(f"TensorFlow Lite Micro failed to run this file: {_tflm_reason(text, error)}", text)
    return interpreter


def _load_tflm(data: bytes, model: Any, arena_size: int | None) -> Any:
    runtime = tflm_runtime_module()
    size = arena_size or _arena_guess(model)
    while True:
        with _native_stderr() as log:
            try:
                return runtime.Interpreter.from_bytes(data, arena_size=size)
            except (RuntimeError, ValueError) as err:
                error = err
        text = "".join(log)
        if arena_size is None and size < _MAX_ARENA and any(s in text for s in _ARENA_SHORT):
            size *= 4
            continue
        raise TFLMError(f"TensorFlow Lite Micro cannot load this file: {_tflm_reason(text, error)}", text)


def _scale_zero_point(details: dict) -> tuple[float, int]:
    q = details["quantization_parameters"]
    if len(q["scales"]) != 1:
        raise TFLMError(f"expected one scale on the model's edge tensor, got {len(q['scales'])}")
    return float(q["scales"][0]), int(q["zero_points"][0])


def predict_tflm(flatbuffer: bytes, x: np.ndarray, arena_size: int | None = None) -> np.ndarray:
    """Outputs of a single-input TFLite model on ``x`` run by TFLM, one file-sized batch (usually 1) at a time.

    Float in, float out like ``predict_litert``: int8/int16 inputs and outputs are (de)quantized with the
    file's scale and zero point. ``arena_size``: the tensor arena in bytes, as on a device (``TFLMError`` if it
    is too small); by default one large enough is found.
    """
    interpreter, model = _tflm_interpreter(flatbuffer, arena_size)
    graph = model.subgraphs[0]
    if graph.inputs is None or len(graph.inputs) == 0 or graph.outputs is None or len(graph.outputs) == 0:
        raise InvalidTFLiteFileError(
            "predict_tflm needs a model with an input and an output; the file's main graph lacks one"
        )
    inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    shape = tuple(int(d) for d in inp["shape"])
    x = np.asarray(x)
    if x.shape[1:] != shape[1:]:
        raise DataError(f"the data's samples have shape {x.shape[1:]}, the file's input is {shape}")
    dtype = np.dtype(inp["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = _scale_zero_point(inp)
        info = np.iinfo(dtype)
    batch, n = max(shape[0], 1), len(x)
    results = []
    error: RuntimeError | None
    with _native_stderr() as log:
        try:
            for start in range(0, n, batch):
                sample = x[start : start + batch]
                if len(sample) < batch:  # a file with a fixed batch > 1: pad the last one
                    sample = np.concatenate([sample, np.zeros((batch - len(sample), *shape[1:]), x.dtype)])
                if dtype.kind in "iu":
                    sample = np.clip(np.round(sample / scale + zero_point), info.min, info.max)
                interpreter.set_input(np.ascontiguousarray(sample, dtype), 0)
                interpreter.invoke()
                results.append(np.array(interpreter.get_output(0), np.float32))
        except RuntimeError as err:
            error = err
        else:
            error = None
    if error is not None:
        text = "".join(log)
        raise TFLMError(f"TensorFlow Lite Micro failed to run this file: {_tflm_reason(text, error)}", text)
    result = np.concatenate(results)[:n] if results else np.zeros((0, *out["shape"][1:]), np.float32)
    if np.dtype(out["dtype"]).kind in "iu":
        scale, zero_point = _scale_zero_point(out)
        result = (result - zero_point) * scale
    return result


class TFLMArena(NamedTuple):
    """TFLM's tensor arena for a file, as its recording allocator reports it (bytes)."""

    total: int  # the arena size the file needs: head + tail
    head: int  # non-persistent: the planned tensors (activations) and scratch buffers
    tail: int  # persistent: TFLM's tensor and node structs, kernels' persistent buffers


def tflm_arena(flatbuffer: bytes) -> TFLMArena:
    """Arena bytes TFLM uses for the file (allocated, then one inference on zeros), from its allocation record.

    The Python package exposes no ``arena_used_bytes``; ``print_allocations`` writes the
    ``RecordingMicroAllocator`` report to stderr, which is captured and parsed here. An arena of exactly
    ``total`` bytes runs the file and one 16 bytes smaller (TFLM's alignment) does not (tests check both); the
    smallest size that allocates, found by bisection, is 0 to 8 bytes below ``total`` depending on the
    alignment of the arena's start.
    """
    interpreter, model = _tflm_interpreter(flatbuffer)
    _invoke_on_zeros(interpreter, model)
    with _native_stderr() as log:
        interpreter.print_allocations()
    text = "".join(log)
    found = {
        k: int(v)
        for k, v in re.findall(r"\[RecordingMicroAllocator\] Arena allocation (\w+) (\d+) bytes", text)
    }
    if not {"total", "head", "tail"} <= found.keys():
        raise TFLMError(f"TFLM's allocation report has no arena totals: {text[:300]!r}", text)
    return TFLMArena(found["total"], found["head"], found["tail"])


def tflm_arena_bytes(flatbuffer: bytes) -> int:
    """The tensor-arena size in bytes TFLM needs to run the file (``tflm_arena(flatbuffer).total``)."""
    return tflm_arena(flatbuffer).total
