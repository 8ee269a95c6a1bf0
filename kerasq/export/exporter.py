"""``keras_export_model``: write a quantized model in the format a deployment needs, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from kerasq.core.enums import parse_enum
from kerasq.export.atomic import atomic_output
from kerasq.export.formats import KerasExportSerializationFormat, QuantizationFormat
from kerasq.export.report import ExportReport, Requantization
from kerasq.export.tflite import convert

_SUFFIX = {KerasExportSerializationFormat.KERAS: ".keras", KerasExportSerializationFormat.TFLITE: ".tflite"}


def keras_export_model(
    model: keras.Model,
    save_model_path: str | os.PathLike,
    serialization_format: KerasExportSerializationFormat | str = KerasExportSerializationFormat.KERAS,
    quantization_format: QuantizationFormat | str = QuantizationFormat.FAKELY_QUANT,
    integer_io: bool = False,
    int4_weights: bool = False,
    verify: bool = True,
) -> ExportReport:
    """Export ``model`` (a kerasq-quantized Keras model) to ``save_model_path``; returns an ``ExportReport``
    (the path written, its size, and where the file computes differently from the Keras model).

    Args:
        serialization_format: KERAS (.keras archive), SAVEDMODEL (directory) or TFLITE (flatbuffer).
        quantization_format: FAKELY_QUANT (float graph with quantize-dequantize) or INT8 (TFLITE only:
            integer weights/activations with kerasq's scales and zero points, int32 biases).
        integer_io: INT8 only: int8 model inputs and outputs instead of float32 ones.
        int4_weights: INT8 only: kernels of at most 4 bits (e.g. chosen by mixed precision) are stored as LiteRT
            int4 tensors, two values per byte, instead of one int8 byte each.
        verify: INT8 only: run the file on the calibration samples the quantized model keeps and refuse it
            (ExportError naming the suspect layers) when it does not follow the Keras model
            (``kerasq.export.verify``); the result is ``ExportReport.verification``.

    The file appears only when the export succeeded; a failed or interrupted export leaves any previous
    file at ``save_model_path`` untouched and no partial file behind.
    """
    fmt = parse_enum(KerasExportSerializationFormat, serialization_format, "serialization_format")
    qfmt = parse_enum(QuantizationFormat, quantization_format, "quantization_format")
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}.")
    path = Path(save_model_path)
    expected = _SUFFIX.get(fmt)
    if expected and path.suffix != expected:
        raise ValueError(f"{fmt.name} exports need a path ending in {expected!r}, got {str(path)!r}.")
    if qfmt is QuantizationFormat.INT8 and fmt is not KerasExportSerializationFormat.TFLITE:
        raise ValueError("INT8 quantization_format is a TFLite format; use serialization_format=TFLITE.")
    if integer_io and qfmt is not QuantizationFormat.INT8:
        raise ValueError("integer_io applies to INT8 TFLite exports only.")
    if int4_weights and qfmt is not QuantizationFormat.INT8:
        raise ValueError("int4_weights applies to INT8 TFLite exports only.")

    requantized: tuple[Requantization, ...] = ()
    verification = None
    if fmt is KerasExportSerializationFormat.TFLITE:
        conversion = convert(model, qfmt, integer_io=integer_io, int4_weights=int4_weights, verify=verify)
        requantized, verification = conversion.requantized, conversion.verification
        with atomic_output(path) as tmp:
            tmp.write_bytes(conversion.flatbuffer)
    elif fmt is KerasExportSerializationFormat.KERAS:
        with atomic_output(path) as tmp:
            model.save(tmp)
    else:
        with atomic_output(path, directory=True) as tmp:
            model.export(str(tmp), format="tf_saved_model", verbose=False)
            if not tf.saved_model.contains_saved_model(str(tmp)):
                raise RuntimeError(f"SavedModel export of {model.name!r} wrote no saved_model.pb")
    size = (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )
    return ExportReport(
        path=path, serialization_format=fmt.value, quantization_format=qfmt.value, size_bytes=size,
        requantized=requantized, verification=verification,
    )  # fmt: skip
