"""Run a .tflite file on LiteRT or TensorFlow Lite Micro: the entry points the exporter, the CLI, tests and
benchmarks use (``predict``, ``predict_litert``, ``predict_tflm``, ``float_tensors``, the arena and file checks).
"""

from __future__ import annotations

import numpy as np

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
    "tflm_runtime_module",
]


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
