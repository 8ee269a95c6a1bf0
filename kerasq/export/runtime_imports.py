"""The optional runtime packages, imported only when a file is run or read.

LiteRT (``ai-edge-litert``) is a core dependency where it has wheels; TensorFlow Lite Micro (``tflite-micro``)
is the ``tflm`` extra. Where one is missing, ``import kerasq``, quantization and the .keras / SavedModel exports
still work, and the step that needs it raises ``RuntimeUnavailableError`` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from kerasq.errors import RuntimeUnavailableError

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
