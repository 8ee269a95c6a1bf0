"""What an export wrote, and where the file computes something the Keras quantized model does not."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kerasq.export.verify import Verification


@dataclass(frozen=True)
class Requantization:
    """One place where the exported file rounds (or clips) a tensor that the Keras model keeps exact.

    Attributes:
        tensor: the Keras layer whose output is affected (the name ``model.summary()`` shows).
        reason: why the file needs it, in words a user can act on.
    """

    tensor: str
    reason: str


@dataclass(frozen=True)
class ExportReport:
    """Returned by ``keras_export_model``.

    Attributes:
        path: the file or directory written.
        serialization_format / quantization_format: what was written (e.g. ``"tflite"`` / ``"int8"``).
        size_bytes: bytes on disk (a SavedModel directory: all its files).
        requantized: every place the file computes differently from the Keras quantized model, with the reason
            (empty for .keras, SavedModel and fake-quant TFLite files, which compute exactly what Keras does).
        verification: how closely a quantized TFLite file follows the Keras model on the calibration samples
            the model keeps (None where nothing was converted, or with ``verify=False``).
    """

    path: Path
    serialization_format: str
    quantization_format: str
    size_bytes: int
    requantized: tuple[Requantization, ...] = field(default_factory=tuple)
    verification: Verification | None = None

    def summary(self) -> str:
        lines = [
            f"wrote {self.path} ({self.serialization_format}, {self.quantization_format}): "
            f"{self.size_bytes:,} bytes"
        ]
        if self.requantized:
            lines.append(f"{len(self.requantized)} place(s) where the file computes differently from Keras:")
            lines += [f"  {r.tensor}: {r.reason}" for r in self.requantized]
        if self.verification is not None:
            lines.append(self.verification.summary())
        return "\n".join(lines)
