"""Exporting quantized models: .keras, SavedModel, TFLite (fake-quant or integer)."""

from kerasq.export.formats import KerasExportSerializationFormat, QuantizationFormat
from kerasq.export.int8_graph import ExportError
from kerasq.export.keras_export import keras_export_model
from kerasq.export.report import ExportReport, Requantization

__all__ = [
    "ExportError",
    "ExportReport",
    "KerasExportSerializationFormat",
    "QuantizationFormat",
    "Requantization",
    "keras_export_model",
]
