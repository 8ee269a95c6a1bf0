"""``keras_export_model``: write a quantized model in the format a deployment needs, atomically."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TypeVar

import keras
import tensorflow as tf

from kerasq.config.enums import parse_enum
from kerasq.errors import ConfigError, ExportError, ExportTargetError
from kerasq.export.atomic import atomic_output
from kerasq.export.formats import KerasExportSerializationFormat, QuantizationFormat
from kerasq.export.report import ExportReport, Requantization
from kerasq.export.tflite import convert

_E = TypeVar("_E", bound=Enum)

_SUFFIX = {KerasExportSerializationFormat.KERAS: ".keras", KerasExportSerializationFormat.TFLITE: ".tflite"}
# What tf.saved_model.save and model.export write into a SavedModel directory: nothing else is replaced.
_SAVEDMODEL_ENTRIES = frozenset(
    {"saved_model.pb", "saved_model.pbtxt", "variables", "assets", "assets.extra", "fingerprint.pb",
     "keras_metadata.pb"}
)  # fmt: skip
_OVERWRITE_FIX = "Pass overwrite=True (kerasq quantize --overwrite) to replace it, or choose another path."


def keras_export_model(
    model: keras.Model,
    save_model_path: str | os.PathLike,
    serialization_format: KerasExportSerializationFormat | str = KerasExportSerializationFormat.KERAS,
    quantization_format: QuantizationFormat | str = QuantizationFormat.FAKELY_QUANT,
    integer_io: bool = False,
    int4_weights: bool = False,
    *,
    verify: bool = True,
    overwrite: bool = False,
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
        overwrite: replace whatever is at ``save_model_path``. Without it an export replaces only a previous
            export of the same kind: a file at a .keras / .tflite path, or a SavedModel directory (or an empty
            one); anything else raises ``ExportTargetError`` saying what is there.

    The file appears only when the export succeeded; a failed or interrupted export leaves any previous
    file at ``save_model_path`` untouched and no partial file behind. New files get the usual permissions
    (0666 less the umask).
    """
    fmt = _parse(KerasExportSerializationFormat, serialization_format, "serialization_format")
    qfmt = _parse(QuantizationFormat, quantization_format, "quantization_format")
    path = Path(save_model_path)
    _check_arguments(model, path, fmt, qfmt, integer_io, int4_weights)
    check_export_target(path, fmt, overwrite)  # before converting: the conversion can take a while

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
                raise ExportError(
                    f"SavedModel export of {model.name!r} wrote no saved_model.pb; please report it."
                )
    return ExportReport(
        path=path, serialization_format=fmt.value, quantization_format=qfmt.value, size_bytes=_size(path),
        requantized=requantized, verification=verification,
    )  # fmt: skip


def _parse(enum_cls: type[_E], value: object, argument: str) -> _E:
    try:
        return parse_enum(enum_cls, value, argument)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_arguments(
    model: object,
    path: Path,
    fmt: KerasExportSerializationFormat,
    qfmt: QuantizationFormat,
    integer_io: bool,
    int4_weights: bool,
) -> None:
    if not isinstance(model, keras.Model):
        raise ConfigError(f"model must be a keras.Model, got {type(model).__name__}.")
    expected = _SUFFIX.get(fmt)
    if expected and path.suffix != expected:
        raise ConfigError(
            f"save_model_path: {fmt.name} exports need a path ending in {expected!r}, got {str(path)!r}; rename "
            "it, or pick the serialization_format that matches the name."
        )
    if qfmt is QuantizationFormat.INT8 and fmt is not KerasExportSerializationFormat.TFLITE:
        raise ConfigError("INT8 quantization_format is a TFLite format; use serialization_format=TFLITE.")
    if integer_io and qfmt is not QuantizationFormat.INT8:
        raise ConfigError("integer_io applies to INT8 TFLite exports only; pass quantization_format=INT8.")
    if int4_weights and qfmt is not QuantizationFormat.INT8:
        raise ConfigError("int4_weights applies to INT8 TFLite exports only; pass quantization_format=INT8.")


def check_export_target(
    save_model_path: str | os.PathLike,
    serialization_format: KerasExportSerializationFormat | str,
    overwrite: bool = False,
) -> None:
    """Raise unless an export to ``save_model_path`` can be written and replaces nothing but a previous export.

    ``ExportTargetError``: something else is at the path (without ``overwrite``), or a file stands where a
    folder must be; ``ExportError``: the folder it goes into is not writable.
    """
    fmt = _parse(KerasExportSerializationFormat, serialization_format, "serialization_format")
    path = Path(save_model_path)
    if not overwrite:
        found = _what_is_in_the_way(path, fmt)
        if found:
            raise ExportTargetError(f"{fmt.name} export: {found}. {_OVERWRITE_FIX}")
    _check_folder(path)


def _what_is_in_the_way(path: Path, fmt: KerasExportSerializationFormat) -> str | None:
    """What an export to ``path`` would delete that is not a previous export of kind ``fmt``, in words."""
    if not path.exists():
        return None
    if fmt is not KerasExportSerializationFormat.SAVEDMODEL:
        if not path.is_dir():
            return None  # a previous .keras / .tflite file
        return f"{str(path)!r} is a directory ({_listing(list(path.iterdir()))}), not a {_SUFFIX[fmt]} file"
    if not path.is_dir():
        return f"{str(path)!r} is a file, not a SavedModel directory; exporting would replace it"
    if not any(path.iterdir()):
        return None
    if not tf.saved_model.contains_saved_model(str(path)):
        return f"{str(path)!r} is a directory holding {_listing(list(path.iterdir()))} and no SavedModel; exporting would delete it"
    extra = [p for p in path.iterdir() if p.name not in _SAVEDMODEL_ENTRIES]
    if not extra:
        return None
    return f"{str(path)!r} holds a SavedModel and also {_listing(extra)}, which exporting would delete"


def _listing(entries: list[Path]) -> str:
    """Up to five names of ``entries``, folders marked with a slash."""
    entries = sorted(entries)
    if not entries:
        return "empty"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:5]]
    more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
    return ", ".join(names) + more


def _check_folder(path: Path) -> None:
    """The nearest existing folder above ``path`` is a folder this process can write into."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ExportTargetError(
            f"cannot export to {str(path)!r}: {str(folder)!r} is a file, so no folder can be made there; choose "
            "another path."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(
            f"cannot export to {str(path)!r}: the folder {str(folder)!r} is not writable; choose a folder you "
            "can write to, or change its permissions."
        )


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
