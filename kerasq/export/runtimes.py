"""The on-device runtimes kerasq checks its files with, imported only when a file is run.

LiteRT (``ai-edge-litert``, formerly the TFLite interpreter) is a core dependency where it has wheels; on
other machines ``import kerasq``, quantization and the .keras / SavedModel exports still work, and running or
checking a .tflite file raises ``RuntimeUnavailableError`` naming the package to install.

TensorFlow Lite Micro (``tflite-micro``, the ``tflm`` extra) is the second runtime: the reference kernels and
the static tensor arena microcontrollers run a file with. It runs batch 1 (shapes are fixed in the file), so
``predict_tflm`` loops over samples; ``tflm_arena_bytes`` is the arena the file needs, read from TFLM's
recording allocator. Every file is checked (``check_tflite_flatbuffer``) before TFLM's C++ code reads it, and
TFLM's failures become ``TFLMError`` carrying TFLM's own log (the op without a kernel, the bytes missing).
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import importlib
import os
import re
import signal
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np


class RuntimeUnavailableError(ImportError):
    """A runtime kerasq needs for this step is not installed; the message names the pip extra to add."""


class InvalidTFLiteFileError(ValueError):
    """The bytes are not a well-formed .tflite flatbuffer (found before any runtime's C++ code reads them)."""


class TFLMError(RuntimeError):
    """TensorFlow Lite Micro could not load or run a file; ``log`` holds TFLM's own messages."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


_WHEELS = "Linux x86_64, macOS arm64 and Windows x86_64"


def _require(module: str, package: str, extra: str, purpose: str, wheels: str = _WHEELS) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RuntimeUnavailableError(
            f"{purpose} needs the {package!r} package, which is not installed here ({err}). Install it with "
            f'`pip install "kerasq[{extra}]"` (or `pip install {package}`); it has wheels for {wheels}.'
        ) from err


def litert_interpreter_module() -> ModuleType:
    """``ai_edge_litert.interpreter`` (its ``Interpreter`` runs .tflite files)."""
    return _require("ai_edge_litert.interpreter", "ai-edge-litert", "litert", "Running a .tflite file")


def litert_schema() -> ModuleType:
    """``ai_edge_litert.schema_py_generated``: the flatbuffer schema, to read and rewrite .tflite files."""
    return _require(
        "ai_edge_litert.schema_py_generated", "ai-edge-litert", "litert", "Editing a .tflite file"
    )


def tflm_runtime_module() -> ModuleType:
    """``tflite_micro.runtime`` (its ``Interpreter`` runs .tflite files with TFLM's reference kernels)."""
    return _require(
        "tflite_micro", "tflite-micro", "tflm", "Running a .tflite file on TensorFlow Lite Micro",
        wheels="Linux x86_64",
    ).runtime  # fmt: skip


def float_tensors(flatbuffer: bytes) -> list[str]:
    """Names of float32 tensors other than the model's inputs and outputs (none in an integer model)."""
    interpreter = litert_interpreter_module().Interpreter(model_content=flatbuffer)
    edges = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    return [
        d["name"]
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.float32 and d["index"] not in edges
    ]


def predict_litert(
    flatbuffer: bytes, x: np.ndarray, batch_size: int = 256, reference_kernels: bool = False
) -> np.ndarray:
    """Outputs of a single-input TFLite model on ``x`` (float; integer edges are (de)quantized).

    ``reference_kernels``: LiteRT's portable reference kernels instead of its default ones (XNNPACK and the
    optimized builtins), the kernels TensorFlow Lite Micro's are ported from.
    """
    module = litert_interpreter_module()
    resolver = module.OpResolverType.BUILTIN_REF if reference_kernels else module.OpResolverType.AUTO
    interpreter = module.Interpreter(model_content=flatbuffer, experimental_op_resolver_type=resolver)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        interpreter.resize_tensor_input(inp["index"], batch.shape)
        interpreter.allocate_tensors()
        if inp["dtype"] != np.float32:
            scale, zero_point = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
        interpreter.set_tensor(inp["index"], batch.astype(inp["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zero_point = out["quantization"]
            result = (result - zero_point) * scale
        results.append(result)
    return np.concatenate(results)


def predict(flatbuffer: bytes, x: np.ndarray, runtime: str = "litert", batch_size: int = 256) -> np.ndarray:
    """Outputs of a single-input TFLite model on ``x`` with ``runtime`` ``"litert"`` or ``"tflm"``.

    ``batch_size`` applies to LiteRT; TFLM runs the file's own batch (1 for kerasq's files), sample by sample.
    """
    if runtime == "litert":
        return predict_litert(flatbuffer, x, batch_size)
    if runtime == "tflm":
        return predict_tflm(flatbuffer, x)
    raise ValueError(f"unknown runtime {runtime!r}: expected one of {RUNTIMES}")


RUNTIMES = ("litert", "tflm")

# ---------------------------------------------------------------------------------------------------------
# The file itself: checks before any runtime's C++ code reads it, and its live-tensor bytes (flatbuffer schema).

_TYPE_BITS = {"FLOAT32": 32, "FLOAT16": 16, "INT32": 32, "UINT8": 8, "INT64": 64, "BOOL": 8, "INT16": 16,
              "COMPLEX64": 64, "INT8": 8, "FLOAT64": 64, "COMPLEX128": 128, "UINT64": 64, "UINT32": 32,
              "UINT16": 16, "INT4": 4, "BFLOAT16": 16, "INT2": 2, "UINT4": 4, "FLOAT8_E4M3FN": 8,
              "FLOAT8_E5M2": 8}  # fmt: skip
# STRING, RESOURCE and VARIANT tensors have no fixed size; they count as 0 bytes.


def _tensor_bytes(schema: ModuleType, tensor: Any) -> int:
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    bits = _TYPE_BITS.get(names.get(tensor.type, ""), 0)
    shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
    return -(-int(np.prod(shape, dtype=np.int64)) * bits // 8)


def _is_constant(model: Any, tensor: Any) -> bool:
    if tensor.buffer <= 0:
        return False
    buffer = model.buffers[tensor.buffer]
    return (buffer.data is not None and len(buffer.data) > 0) or buffer.offset > 1


def check_tflite_flatbuffer(flatbuffer: bytes) -> Any:
    """The parsed model (schema ``ModelT``), or ``InvalidTFLiteFileError`` saying what is malformed.

    Runtimes' C++ code trusts the offsets and indices in a file, so a truncated or corrupted file can crash the
    process. This walks the whole flatbuffer in Python first: identifier, schema version, every table, every
    tensor, buffer and operator-code index, constant tensors' byte counts, the data flow (each tensor written
    once, before it is read), options tables, quantization parameters. Then LiteRT verifies the flatbuffer,
    prepares every op and runs it once on zeros, in a forked child process on Linux (LiteRT aborts on some
    corrupted parameters too); its tensor shapes must be the file's.
    """
    schema = litert_schema()
    data = bytes(flatbuffer)

    def invalid(reason: str) -> InvalidTFLiteFileError:
        return InvalidTFLiteFileError(f"not a valid .tflite file ({len(data):,} bytes): {reason}")

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise invalid("no TFL3 file identifier at bytes 4-8")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except (struct.error, IndexError, TypeError, ValueError, UnicodeDecodeError, OverflowError) as err:
        raise invalid(f"the flatbuffer does not parse ({type(err).__name__}: {err})") from None
    if model.version != 3:
        raise invalid(f"schema version {model.version}, expected 3")
    if not model.subgraphs:
        raise invalid("no subgraphs")
    n_buffers, n_codes = len(model.buffers or []), len(model.operatorCodes or [])
    for g, subgraph in enumerate(model.subgraphs):
        tensors = subgraph.tensors or []
        for t, tensor in enumerate(tensors):
            if tensor.shape is not None and any(int(d) < 0 for d in tensor.shape):
                raise invalid(f"subgraph {g} tensor {t} has a negative dimension {list(tensor.shape)}")
            if not 0 <= tensor.buffer < max(n_buffers, 1):
                raise invalid(f"subgraph {g} tensor {t} refers to buffer {tensor.buffer} of {n_buffers}")
            if n_buffers and _is_constant(model, tensor):
                buffer = model.buffers[tensor.buffer]
                if buffer.offset > 1:
                    have = buffer.size
                    if buffer.offset + buffer.size > len(data):
                        raise invalid(f"buffer {tensor.buffer} lies past the end of the file")
                else:
                    have = len(buffer.data)
                if have < _tensor_bytes(schema, tensor):
                    raise invalid(
                        f"constant tensor {t} needs {_tensor_bytes(schema, tensor)} bytes, its buffer has {have}"
                    )

        def check_indices(indices: Any, what: str, g: int = g, n: int = len(tensors)) -> None:
            for i in [] if indices is None else indices:
                if not -1 <= int(i) < n:
                    raise invalid(f"subgraph {g} {what} refers to tensor {int(i)} of {n}")

        check_indices(subgraph.inputs, "input list")
        check_indices(subgraph.outputs, "output list")
        for o, op in enumerate(subgraph.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                raise invalid(f"subgraph {g} operator {o} has operator code {op.opcodeIndex} of {n_codes}")
            check_indices(op.inputs, f"operator {o}")
            check_indices(op.outputs, f"operator {o}")
            check_indices(op.intermediates, f"operator {o}")
            _check_options(schema, model, tensors, op, o, invalid)
        for t, tensor in enumerate(tensors):
            _check_quantization(schema, model, tensor, t, invalid)
        _check_dataflow(model, subgraph, g, invalid)
    crashed = _in_child(
        ("litert", hashlib.sha256(data).digest()), lambda: _check_with_litert(data, model, invalid)
    )
    if crashed:
        raise invalid(f"LiteRT crashed ({crashed}) preparing or running it on zeros in a child process")
    return model


_POOLS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}
_REDUCERS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"}
_NEEDS_OPTIONS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", *_POOLS}
# ops whose kernels divide by their strides / filter sizes: missing options would leave them 0


def _names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _check_options(schema: ModuleType, model: Any, tensors: list, op: Any, o: int, invalid: Any) -> None:
    """The operator's options table is the one its op reads (a kernel would reinterpret another one)."""
    code = model.operatorCodes[op.opcodeIndex]
    name = _names(schema.BuiltinOperator).get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
    options = _names(schema.BuiltinOptions).get(op.builtinOptionsType, "NONE")
    if options == "NONE":
        if name in _NEEDS_OPTIONS:
            raise invalid(f"operator {o} ({name}) has no options table")
        return
    stem, own = options.removesuffix("Options").lower(), name.replace("_", "").lower()
    others = {n.replace("_", "").lower() for n in vars(schema.BuiltinOperator) if not n.startswith("_")}
    wrong = (
        (stem == "pool2d" and name not in _POOLS)
        or (stem == "reducer" and name not in _REDUCERS)
        or (stem in others and stem != own and (name, stem) != ("CONV_3D_TRANSPOSE", "conv3d"))
        or (name in _NEEDS_OPTIONS and stem not in (own, "pool2d"))
    )
    if wrong:
        raise invalid(f"operator {o} ({name}) carries {options}")
    for field, value in vars(op.builtinOptions or object()).items():
        if field.startswith(("stride", "filter", "dilation")) and int(value) < 1:
            raise invalid(f"operator {o} ({name}) has {field} = {value}")
        if isinstance(value, float) and not np.isfinite(value):
            raise invalid(f"operator {o} ({name}) has {field} = {value}")
    if name == "SOFTMAX" and not getattr(op.builtinOptions, "beta", 0.0) > 0:  # TFLM aborts on beta <= 0
        raise invalid(f"operator {o} (SOFTMAX) has beta = {getattr(op.builtinOptions, 'beta', None)}")
    if name == "DEPTHWISE_CONV_2D" and len(op.inputs) >= 2:  # TFLM loops over input channels x multiplier
        shapes = [tensors[int(i)].shape for i in (op.inputs[0], op.inputs[1])]
        multiplier = getattr(op.builtinOptions, "depthMultiplier", 0)
        if all(s is not None and len(s) == 4 for s in shapes) and int(shapes[1][3]) != int(
            shapes[0][3]
        ) * max(multiplier, 1):
            raise invalid(
                f"operator {o} (DEPTHWISE_CONV_2D) has depth multiplier {multiplier} for {int(shapes[0][3])} "
                f"input and {int(shapes[1][3])} output channels"
            )


_MIN_SCALE, _MAX_SCALE = 1e-30, 1e9  # TFLM aborts on requantization multipliers it cannot represent
_QUANTIZED = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT4": np.int8}


def _check_dataflow(model: Any, subgraph: Any, g: int, invalid: Any) -> None:
    """Each tensor is written once, by an op before any op that reads it (TFLM plans memory from this)."""
    tensors = subgraph.tensors or []
    given = {int(i) for i in ([] if subgraph.inputs is None else subgraph.inputs)}
    given |= {i for i, t in enumerate(tensors) if _is_constant(model, t)}
    ready = given | {i for i, t in enumerate(tensors) if t.isVariable}
    for o, op in enumerate(subgraph.operators or []):
        for i in [] if op.inputs is None else op.inputs:
            if int(i) >= 0 and int(i) not in ready:
                raise invalid(
                    f"subgraph {g} operator {o} reads tensor {int(i)} before any operator writes it"
                )
        for i in [] if op.outputs is None else op.outputs:
            if int(i) < 0:  # an optional output left out
                continue
            if int(i) in given or (int(i) in ready and not tensors[int(i)].isVariable):
                raise invalid(f"subgraph {g} operator {o} writes tensor {int(i)}, which is already written")
            ready.add(int(i))
    for i in [] if subgraph.outputs is None else subgraph.outputs:
        if int(i) not in ready:
            raise invalid(f"subgraph {g} output tensor {int(i)} is never written")


def _check_quantization(schema: ModuleType, model: Any, tensor: Any, t: int, invalid: Any) -> None:
    q = tensor.quantization
    kind = _names(schema.TensorType).get(tensor.type, "")
    n_scales = 0 if q is None or q.scale is None else len(q.scale)
    n_zeros = 0 if q is None or q.zeroPoint is None else len(q.zeroPoint)
    if n_zeros and n_zeros != n_scales:
        raise invalid(f"tensor {t} has {n_scales} scales but {n_zeros} zero points")
    if n_scales == 0:
        if kind in _QUANTIZED and not _is_constant(model, tensor):  # integer kernels read scale[0]
            raise invalid(f"{kind} tensor {t} has no quantization scale")
        return
    scale = np.asarray(q.scale, np.float64)
    zero = np.zeros(len(scale)) if q.zeroPoint is None else np.asarray(q.zeroPoint, np.float64)
    if not (np.all(np.isfinite(scale)) and np.all(scale > _MIN_SCALE) and np.all(scale < _MAX_SCALE)):
        raise invalid(
            f"tensor {t} has a scale outside ({_MIN_SCALE:g}, {_MAX_SCALE:g}): {scale[:4].tolist()}"
        )
    shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
    if len(scale) > 1 and not (
        0 <= q.quantizedDimension < len(shape) and shape[q.quantizedDimension] == len(scale)
    ):
        raise invalid(f"tensor {t} has {len(scale)} scales for axis {q.quantizedDimension} of shape {shape}")
    dtype = _QUANTIZED.get(kind)
    if dtype is not None:
        info = np.iinfo(dtype)
        if np.any(zero < info.min) or np.any(zero > info.max):
            raise invalid(f"tensor {t} has a zero point outside {np.dtype(dtype).name}: {zero[:4].tolist()}")


def _check_with_litert(data: bytes, model: Any, invalid: Any) -> None:
    """LiteRT verifies the flatbuffer, builds the graph and runs it once on zeros; its shapes must be the file's.

    TFLM takes the file's tensor shapes and op parameters as given, so a shape that disagrees with what the op
    computes would make a kernel read or write past a buffer. LiteRT checks them as it prepares each op (ops
    after a shape computation only when they run, hence the inference).
    """
    module = litert_interpreter_module()
    try:
        interpreter = module.Interpreter(
            model_content=data,
            experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interpreter.invoke()
    except (ValueError, RuntimeError) as err:
        raise invalid(f"LiteRT cannot run it ({str(err).strip()[:300]})") from None
    tensors = model.subgraphs[0].tensors or []
    for index, tensor in enumerate(tensors):
        if _is_constant(model, tensor):
            continue
        try:  # every tensor by index (get_tensor_details skips those whose name or details do not decode)
            computed = [int(v) for v in interpreter._interpreter.TensorSize(index, 0)]
        except (ValueError, RuntimeError) as err:
            raise invalid(f"LiteRT cannot describe tensor {index} ({err})") from None
        declared = [] if tensor.shape is None else [int(v) for v in tensor.shape]
        if declared != computed:
            raise invalid(f"tensor {index} is declared {declared} but its op computes {computed}")


def peak_live_tensor_bytes(flatbuffer: bytes) -> int:
    """Peak bytes of live non-constant tensors of the file's main subgraph, in the file's operator order.

    A tensor is live from the operator that writes it to the last operator that reads it (both included); model
    inputs are live from the first operator, model outputs to the last, variable tensors throughout. Shapes are
    the file's (batch 1). This is the lower bound for the activation part of any runtime's arena, and it needs
    no Keras model (the file is checked first, see ``check_tflite_flatbuffer``).
    """
    return live_tensor_bytes_per_op(flatbuffer).max(initial=0).item()


def live_tensor_bytes_per_op(flatbuffer: bytes) -> np.ndarray:
    """Bytes of live non-constant tensors while each operator runs (see ``peak_live_tensor_bytes``)."""
    return _live_bytes(check_tflite_flatbuffer(flatbuffer))


def _live_bytes(model: Any) -> np.ndarray:
    schema = litert_schema()
    subgraph = model.subgraphs[0]
    tensors, operators = subgraph.tensors or [], subgraph.operators or []
    last = max(len(operators) - 1, 0)
    first_use: dict[int, int] = {}
    last_use: dict[int, int] = {}

    def touch(index: int, step: int) -> None:
        if index < 0 or _is_constant(model, tensors[index]):
            return
        first_use[index] = min(first_use.get(index, step), step)
        last_use[index] = max(last_use.get(index, step), step)

    for index in [] if subgraph.inputs is None else subgraph.inputs:
        touch(int(index), 0)
    for step, op in enumerate(operators):
        for index in [*([] if op.inputs is None else op.inputs), *([] if op.outputs is None else op.outputs)]:
            touch(int(index), step)
    for index in [] if subgraph.outputs is None else subgraph.outputs:
        touch(int(index), last)
    for index, tensor in enumerate(tensors):
        if tensor.isVariable:
            touch(index, 0)
            touch(index, last)
    live = np.zeros(last + 1, np.int64)
    for index, start in first_use.items():
        live[start : last_use[index] + 1] += _tensor_bytes(schema, tensors[index])
    return live


# ---------------------------------------------------------------------------------------------------------
# TensorFlow Lite Micro


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
    return max(64 * 1024, 2 * int(_live_bytes(model).max(initial=0)) + 32 * 1024)


def _tflm_interpreter(flatbuffer: bytes, arena_size: int | None = None) -> tuple[Any, Any]:
    """A TFLM interpreter with its tensors allocated, and the parsed model (checked before TFLM reads it).

    Without ``arena_size`` the arena starts at twice the file's peak live-tensor bytes plus 32 KiB and grows
    (x4, up to 1 GiB) while TFLM reports it too small.
    """
    tflm_runtime_module()
    data = bytes(flatbuffer)
    model = check_tflite_flatbuffer(data)
    key = ("tflm", hashlib.sha256(data).digest(), arena_size)
    crashed = _in_child(key, lambda: _invoke_on_zeros(_load_tflm(data, model, arena_size), model))
    if crashed:
        raise TFLMError(
            f"TensorFlow Lite Micro crashed ({crashed}) loading or running this file on zeros in a child "
            "process; the file passes kerasq's checks, but TFLM cannot run it (corrupted op parameters or "
            "quantization?)"
        )
    return _load_tflm(data, model, arena_size), model


_IN_CHILD_OK: set[Any] = set()  # keys of calls that already ran to completion in a child process
_CHILD_TIMEOUT = 600.0
_FORK = hasattr(os, "fork") and sys.platform.startswith("linux")  # macOS: fork is unsafe once frameworks load


def _in_child(key: Any, call: Any) -> str | None:
    """Run ``call`` in a forked child so that a crash in C++ code cannot take this process down.

    Returns the signal's name if the child crashed, else None. If ``call`` raised in the child it is called
    again here, where it raises the same error (it failed cleanly, so it is safe to repeat); if it returned,
    it is not repeated. Calls with a ``key`` that already completed, and every call off Linux (TFLM's wheels
    are Linux-only; macOS's fork is unsafe in a process with threads), run here directly.
    """
    if not _FORK or key in _IN_CHILD_OK:
        call()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns on fork with threads
        pid = os.fork()
    if pid == 0:  # the child: the call, then leave without running any Python cleanup
        code = 0
        try:
            faulthandler.disable()  # a crash here is the expected outcome, not one to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            call()
        except BaseException:
            code = 1
        os._exit(code)
    deadline = time.monotonic() + _CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"no result in {_CHILD_TIMEOUT:.0f} s"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    if os.WEXITSTATUS(status) == 0:
        _IN_CHILD_OK.add(key)
    else:
        call()  # raises the child's error here
    return None


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
        raise ValueError(
            "predict_tflm needs a model with an input and an output; the file's main graph lacks one"
        )
    inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    shape = tuple(int(d) for d in inp["shape"])
    x = np.asarray(x)
    if x.shape[1:] != shape[1:]:
        raise ValueError(f"the data's samples have shape {x.shape[1:]}, the file's input is {shape}")
    dtype = np.dtype(inp["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = _scale_zero_point(inp)
        info = np.iinfo(dtype)
    batch, n = max(shape[0], 1), len(x)
    results = []
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
