"""The on-device runtimes kerasq checks its files with, imported only when a file is run.

LiteRT (``ai-edge-litert``, formerly the TFLite interpreter) is a core dependency where it has wheels; on
other machines ``import kerasq``, quantization and the .keras / SavedModel exports still work, and running or
checking a .tflite file raises ``RuntimeUnavailableError`` naming the package to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType


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
