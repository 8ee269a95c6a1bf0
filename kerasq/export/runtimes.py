"""The on-device runtimes kerasq checks its files with, imported only when a file is run.

LiteRT (``ai-edge-litert``, formerly the TFLite interpreter) is a core dependency where it has wheels; on
other machines ``import kerasq``, quantization and the .keras / SavedModel exports still work, and running or
checking a .tflite file raises ``RuntimeUnavailableError`` naming the package to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np


class RuntimeUnavailableError(ImportError):
    """A runtime kerasq needs for this step is not installed; the message names the pip extra to add."""


def _require(module: str, package: str, extra: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RuntimeUnavailableError(
            f"{purpose} needs the {package!r} package, which is not installed here ({err}). Install it with "
            f'`pip install "kerasq[{extra}]"` (or `pip install {package}`); it has wheels for Linux x86_64, '
            "macOS arm64 and Windows x86_64."
        ) from err


def litert_interpreter_module() -> ModuleType:
    """``ai_edge_litert.interpreter`` (its ``Interpreter`` runs .tflite files)."""
    return _require("ai_edge_litert.interpreter", "ai-edge-litert", "litert", "Running a .tflite file")


def litert_schema() -> ModuleType:
    """``ai_edge_litert.schema_py_generated``: the flatbuffer schema, to read and rewrite .tflite files."""
    return _require(
        "ai_edge_litert.schema_py_generated", "ai-edge-litert", "litert", "Editing a .tflite file"
    )


def float_tensors(flatbuffer: bytes) -> list[str]:
    """Names of float32 tensors other than the model's inputs and outputs (none in an integer model)."""
    interpreter = litert_interpreter_module().Interpreter(model_content=flatbuffer)
    edges = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    return [
        d["name"]
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.float32 and d["index"] not in edges
    ]


def predict_litert(flatbuffer: bytes, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of a single-input TFLite model on ``x`` (float; integer edges are (de)quantized)."""
    interpreter = litert_interpreter_module().Interpreter(model_content=flatbuffer)
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
