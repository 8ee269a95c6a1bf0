"""``mct.exporter`` as MCT users type it (``mct.exporter.keras_export_model(...)``): the names of ``kerasq.export``,
whose ``keras_export.py`` implements them."""

from kerasq.export import (
    ExportError,
    KerasExportSerializationFormat,
    QuantizationFormat,
    keras_export_model,
)

__all__ = ["ExportError", "KerasExportSerializationFormat", "QuantizationFormat", "keras_export_model"]
