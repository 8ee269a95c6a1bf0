"""A .tflite file itself, read through the LiteRT flatbuffer schema: checks before any runtime's C++ code
reads it (runtimes trust its offsets, shapes and op parameters, so a corrupted file can crash the process), and
the bytes of its live tensors in its own operator order (the lower bound of any runtime's activation arena).
"""

from __future__ import annotations

import hashlib
import struct
from types import ModuleType
from typing import Any

import numpy as np

from kerasq.errors import KerasqError
from kerasq.export.child_process import run_in_child
from kerasq.export.runtime_imports import litert_interpreter_module, litert_schema


class InvalidTFLiteFileError(KerasqError, ValueError):
    """The bytes are not a well-formed .tflite flatbuffer (found before any runtime's C++ code reads them)."""


_TYPE_BITS = {"FLOAT32": 32, "FLOAT16": 16, "INT32": 32, "UINT8": 8, "INT64": 64, "BOOL": 8, "INT16": 16,
              "COMPLEX64": 64, "INT8": 8, "FLOAT64": 64, "COMPLEX128": 128, "UINT64": 64, "UINT32": 32,
              "UINT16": 16, "INT4": 4, "BFLOAT16": 16, "INT2": 2, "UINT4": 4, "FLOAT8_E4M3FN": 8,
              "FLOAT8_E5M2": 8}  # fmt: skip
# STRING, RESOURCE and VARIANT tensors have no fixed size; they count as 0 bytes.


def tensor_bytes(schema: ModuleType, tensor: Any) -> int:
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    bits = _TYPE_BITS.get(names.get(tensor.type, ""), 0)
    shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
    return -(-int(np.prod(shape, dtype=np.int64)) * bits // 8)


def is_constant(model: Any, tensor: Any) -> bool:
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

    model = _parse(schema, data, invalid)
    n_codes = len(model.operatorCodes or [])
    for g, subgraph in enumerate(model.subgraphs):
        tensors = subgraph.tensors or []
        for t, tensor in enumerate(tensors):
            _check_tensor(schema, model, len(data), tensor, g, t, invalid)
        _check_indices(subgraph.inputs, f"subgraph {g} input list", len(tensors), invalid)
        _check_indices(subgraph.outputs, f"subgraph {g} output list", len(tensors), invalid)
        for o, op in enumerate(subgraph.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                raise invalid(f"subgraph {g} operator {o} has operator code {op.opcodeIndex} of {n_codes}")
            for indices in (op.inputs, op.outputs, op.intermediates):
                _check_indices(indices, f"subgraph {g} operator {o}", len(tensors), invalid)
            _check_options(schema, model, tensors, op, o, invalid)
        for t, tensor in enumerate(tensors):
            _check_quantization(schema, model, tensor, t, invalid)
        _check_dataflow(model, subgraph, g, invalid)
    crashed = run_in_child(
        ("litert", hashlib.sha256(data).digest()), lambda: _check_with_litert(data, model, invalid)
    )
    if crashed:
        raise invalid(f"LiteRT crashed ({crashed}) preparing or running it on zeros in a child process")
    return model


def _parse(schema: ModuleType, data: bytes, invalid: Any) -> Any:
    """The parsed model, once the file identifier, the flatbuffer itself, the schema version and the presence
    of a subgraph check out."""
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
    return model


def _check_tensor(
    schema: ModuleType, model: Any, file_size: int, tensor: Any, g: int, t: int, invalid: Any
) -> None:
    """The tensor's dimensions are not negative, its buffer index exists, and a constant tensor's buffer (in
    the flatbuffer, or past it at an offset inside the file) holds all its bytes."""
    n_buffers = len(model.buffers or [])
    if tensor.shape is not None and any(int(d) < 0 for d in tensor.shape):
        raise invalid(f"subgraph {g} tensor {t} has a negative dimension {list(tensor.shape)}")
    if not 0 <= tensor.buffer < max(n_buffers, 1):
        raise invalid(f"subgraph {g} tensor {t} refers to buffer {tensor.buffer} of {n_buffers}")
    if not (n_buffers and is_constant(model, tensor)):
        return
    buffer = model.buffers[tensor.buffer]
    if buffer.offset > 1:
        have = buffer.size
        if buffer.offset + buffer.size > file_size:
            raise invalid(f"buffer {tensor.buffer} lies past the end of the file")
    else:
        have = len(buffer.data)
    if have < tensor_bytes(schema, tensor):
        raise invalid(
            f"constant tensor {t} needs {tensor_bytes(schema, tensor)} bytes, its buffer has {have}"
        )


def _check_indices(indices: Any, what: str, n: int, invalid: Any) -> None:
    """Every tensor index in ``indices`` names one of the subgraph's ``n`` tensors (-1: an optional tensor
    left out)."""
    for i in [] if indices is None else indices:
        if not -1 <= int(i) < n:
            raise invalid(f"{what} refers to tensor {int(i)} of {n}")


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
_QUANTIZED: dict[str, type[np.integer]] = {
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT4": np.int8,
}


def _check_dataflow(model: Any, subgraph: Any, g: int, invalid: Any) -> None:
    """Each tensor is written once, by an op before any op that reads it (TFLM plans memory from this)."""
    tensors = subgraph.tensors or []
    given = {int(i) for i in ([] if subgraph.inputs is None else subgraph.inputs)}
    given |= {i for i, t in enumerate(tensors) if is_constant(model, t)}
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
        if kind in _QUANTIZED and not is_constant(model, tensor):  # integer kernels read scale[0]
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
        if is_constant(model, tensor):
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
    return live_bytes(check_tflite_flatbuffer(flatbuffer))


def live_bytes(model: Any) -> np.ndarray:
    schema = litert_schema()
    subgraph = model.subgraphs[0]
    tensors, operators = subgraph.tensors or [], subgraph.operators or []
    last = max(len(operators) - 1, 0)
    first_use: dict[int, int] = {}
    last_use: dict[int, int] = {}

    def touch(index: int, step: int) -> None:
        if index < 0 or is_constant(model, tensors[index]):
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
        live[start : last_use[index] + 1] += tensor_bytes(schema, tensors[index])
    return live
