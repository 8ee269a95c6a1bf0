"""MCT-compatible name for ``kerasq.export`` (``mct.exporter.keras_export_model(...)``)."""

from kerasq.export import (
    ExportError,
    KerasExportSerializationFormat,
    QuantizationFormat,
    keras_export_model,
)

__all__ = ["ExportError", "KerasExportSerializationFormat", "QuantizationFormat", "keras_export_model"]
