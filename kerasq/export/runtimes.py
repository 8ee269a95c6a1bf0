"""Run a .tflite file on LiteRT or TensorFlow Lite Micro: the entry points the exporter, the CLI, tests and
benchmarks use (``predict``, ``predict_litert``, ``predict_tflm``, ``float_tensors``, the arena and file checks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasq.errors import ConfigError, DataError
from kerasq.export.runtime_imports import (
    RuntimeUnavailableError,
    litert_interpreter_module,
    litert_schema,
    tflm_runtime_module,
)
from kerasq.export.tflite_file import (
    InvalidTFLiteFileError,
    check_tflite_flatbuffer,
    live_tensor_bytes_per_op,
    peak_live_tensor_bytes,
)
from kerasq.export.tflm import TFLMArena, TFLMError, predict_tflm, tflm_arena, tflm_arena_bytes

__all__ = [
    "RUNTIMES",
    "InvalidTFLiteFileError",
    "RuntimeUnavailableError",
    "TFLMArena",
    "TFLMError",
    "check_tflite_flatbuffer",
    "float_tensors",
    "litert_interpreter_module",
    "litert_schema",
    "live_tensor_bytes_per_op",
    "peak_live_tensor_bytes",
    "predict",
    "predict_litert",
    "predict_tflm",
    "tflm_arena",
    "tflm_arena_bytes",
    "tflite_input_names",
    "tflm_runtime_module",
]


def float_tensors(flatbuffer: bytes) -> list[str]:
    """Names of float32 tensors other than the model's inputs and outputs (none in an integer model)."""
    interpreter = _litert_interpreter(flatbuffer)
    edges = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    return [
        d["name"]
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.float32 and d["index"] not in edges
    ]


Inputs = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]
_SIGNATURE_PREFIX = "serving_default_"  # the converter's tensor names: serving_default_<input name>:0


def tflite_input_names(flatbuffer: bytes) -> list[str]:
    """The names of the file's inputs, in the file's order (which the converter chooses, not Keras's).

    They are the Keras model's input names: from the file's signature, or, in a file without one, its input
    tensor names without the converter's ``serving_default_`` prefix and ``:0`` suffix.
    """
    return _input_names(_litert_interpreter(flatbuffer))


def predict_litert(
    flatbuffer: bytes,
    x: Inputs,
    batch_size: int = 256,
    reference_kernels: bool = False,
    input_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Outputs (the first output) of a TFLite model on ``x`` (float; integer edges are (de)quantized).

    ``x``: one array for a single-input file; for any file a dict of arrays keyed by input name (the Keras
    model's input names, see ``tflite_input_names``), or a list of arrays with their ``input_names`` (e.g.
    ``[t.name for t in model.inputs]`` for a list in the Keras model's order). Inputs are matched by name
    because the converter orders a file's inputs its own way. ``DataError`` if they cannot be matched or a
    sample shape differs from the file's.
    ``reference_kernels``: LiteRT's portable reference kernels instead of its default ones (XNNPACK and the
    optimized builtins), the kernels TensorFlow Lite Micro's are ported from.
    """
    interpreter = _litert_interpreter(flatbuffer, reference_kernels)
    details = interpreter.get_input_details()
    arrays = _arrays_for(details, _input_names(interpreter), x, input_names)
    out = interpreter.get_output_details()[0]
    n = len(arrays[0])
    return np.concatenate(
        [
            _run_batch(interpreter, details, out, [a[start : start + batch_size] for a in arrays])
            for start in range(0, n, batch_size)
        ]
    )


def _litert_interpreter(flatbuffer: bytes, reference_kernels: bool = False) -> Any:
    module = litert_interpreter_module()
    resolver = module.OpResolverType.BUILTIN_REF if reference_kernels else module.OpResolverType.AUTO
    try:
        return module.Interpreter(model_content=flatbuffer, experimental_op_resolver_type=resolver)
    except (ValueError, RuntimeError) as err:
        raise InvalidTFLiteFileError(
            f"not a valid .tflite file: LiteRT cannot load it ({str(err).strip()[:300]}); export it again, or "
            "call check_tflite_flatbuffer on it to see what is malformed"
        ) from err


def _input_names(interpreter: Any) -> list[str]:
    details = interpreter.get_input_details()
    by_index: dict[int, str] = {}
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        by_index = {d["index"]: name for name, d in runner.get_input_details().items()}
        if set(by_index) != {d["index"] for d in details}:  # the signature is not the main graph's
            by_index = {}
    return [by_index.get(d["index"]) or _tensor_input_name(d["name"]) for d in details]


def _tensor_input_name(tensor_name: str) -> str:
    return tensor_name.removeprefix(_SIGNATURE_PREFIX).removesuffix(":0")


def _arrays_for(
    details: list[dict], names: list[str], x: Inputs, input_names: Sequence[str] | None
) -> list[np.ndarray]:
    """``x`` as one array per file input, in the file's order, checked against the file's shapes."""
    arrays = [np.asarray(a) for a in _match_by_name(names, x, input_names)]
    lengths = {len(a) if a.ndim else 0 for a in arrays}
    if len(lengths) > 1:
        counts = ", ".join(
            f"{n!r} has {len(a) if a.ndim else 0} samples" for n, a in zip(names, arrays, strict=True)
        )
        raise DataError(f"every input needs the same number of samples: {counts}.")
    if lengths == {0}:
        raise DataError("x holds no samples; pass at least one (the first axis is the batch).")
    for name, array, detail in zip(names, arrays, details, strict=True):
        _check_sample_shape(name, array.shape[1:], detail["shape_signature"][1:])
    return arrays


def _match_by_name(names: list[str], x: Inputs, input_names: Sequence[str] | None) -> list[Any]:
    order = f"{len(names)} inputs {tuple(names)}"
    fix = (
        "pass x as a dict keyed by input name, or a list with input_names (the Keras model's input names in "
        "the list's order): the converter orders a file's inputs its own way, so a list cannot be matched by "
        "position"
    )
    if isinstance(x, Mapping):
        given = dict(x)
    elif isinstance(x, (list, tuple)):
        if input_names is None:
            if len(x) == 1 == len(names):
                return [x[0]]
            raise DataError(f"the file has {order}; {fix}.")
        if len(input_names) != len(x):
            raise DataError(f"input_names has {len(input_names)} names for {len(x)} arrays in x.")
        given = dict(zip(input_names, x, strict=True))
    else:
        if len(names) != 1:
            raise DataError(f"x is one array but the file has {order}; {fix}.")
        return [x]
    unknown = [k for k in given if k not in names]
    if unknown:
        raise DataError(f"the file has no input named {unknown[0]!r}; its {order} need one array each.")
    missing = [n for n in names if n not in given]
    if missing:
        raise DataError(f"no array for the file's input {missing[0]!r}; its {order} need one array each.")
    return [given[n] for n in names]


def _check_sample_shape(name: str, got: tuple[int, ...], expected: Sequence[int]) -> None:
    """Refuse samples whose shape differs from the file's in rank or in a fixed (non -1) dimension."""
    want = tuple(None if int(d) < 0 else int(d) for d in expected)
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got, strict=True)):
        raise DataError(
            f"input {name!r}: the data's samples have shape {tuple(got)}, the file expects {want} (None: any "
            "size); resize or crop the data to the model's input size."
        )


def _run_batch(interpreter: Any, details: list[dict], out: dict, batches: list[np.ndarray]) -> np.ndarray:
    for detail, batch in zip(details, batches, strict=True):
        interpreter.resize_tensor_input(detail["index"], batch.shape)
    interpreter.allocate_tensors()
    for detail, batch in zip(details, batches, strict=True):
        interpreter.set_tensor(detail["index"], to_file_dtype(batch, detail))
    interpreter.invoke()
    return from_file_dtype(interpreter.get_tensor(out["index"]), out)


def from_file_dtype(value: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor as float32: integer outputs dequantized with the file's scale and zero point."""
    value = value.astype(np.float32)
    if detail["dtype"] != np.float32:
        scale, zero_point = detail["quantization"]
        value = (value - zero_point) * scale
    return value


def to_file_dtype(batch: np.ndarray, detail: dict) -> np.ndarray:
    """``batch`` in the input's dtype: float as is, integer inputs quantized with the file's scale and zero point."""
    if detail["dtype"] != np.float32:
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
    return batch.astype(detail["dtype"])


def predict(
    flatbuffer: bytes,
    x: Inputs,
    runtime: str = "litert",
    batch_size: int = 256,
    input_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Outputs of a TFLite model on ``x`` with ``runtime`` ``"litert"`` or ``"tflm"`` (``x`` and
    ``input_names`` as for ``predict_litert``; TFLM runs single-input files).

    ``batch_size`` applies to LiteRT; TFLM runs the file's own batch (1 for kerasq's files), sample by sample.
    """
    if runtime == "litert":
        return predict_litert(flatbuffer, x, batch_size, input_names=input_names)
    if runtime == "tflm":
        interpreter = _litert_interpreter(flatbuffer)
        details = interpreter.get_input_details()
        arrays = _arrays_for(details, _input_names(interpreter), x, input_names)
        if len(arrays) != 1:
            raise DataError(
                f"kerasq runs single-input files on TFLite Micro; this one has {len(arrays)} inputs. Use "
                "runtime='litert'."
            )
        return predict_tflm(flatbuffer, arrays[0])
    raise ConfigError(f"unknown runtime {runtime!r}: expected one of {RUNTIMES}")


RUNTIMES = ("litert", "tflm")
