"""Reading the files a command is given: a .keras model, arrays of data, a .tflite file (checked first)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import kerasq  # noqa: F401 - registers kerasq layers for load_model
from kerasq.cli.exit_codes import EXIT_INPUT, CliError
from kerasq.data.files import load_arrays
from kerasq.export.runtimes import InvalidTFLiteFileError, check_tflite_flatbuffer


def load_model(path: str):
    """The Keras model in the .keras file at ``path`` (with kerasq's layers registered)."""
    import keras

    p = Path(path)
    if not p.exists():
        raise CliError(f"model file {path!r} does not exist", EXIT_INPUT)
    if p.suffix != ".keras":
        raise CliError(f"{path!r}: expected a .keras model file", EXIT_INPUT)
    if not zipfile.is_zipfile(p):  # keras reports such files as "File not found"
        raise CliError(
            f"{path!r} is not a valid .keras file: a .keras model is a zip archive and this file is not one "
            f"(truncated or corrupted?); save the model again with model.save({p.name!r}) or copy it again",
            EXIT_INPUT,
        )
    try:
        return keras.models.load_model(p)
    except Exception as err:  # keras raises many types for corrupt archives
        raise CliError(f"cannot load {path!r} as a Keras model: {err}", EXIT_INPUT) from err


def load_inputs(path: str, rescale: float, image_size: tuple[int, int] | None = None):
    """(x as float32 times ``rescale``, y or None) from ``path`` (see ``kerasq.data.files.load_arrays``)."""

    try:
        x, y = load_arrays(path, image_size)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise CliError(str(err), EXIT_INPUT) from err
    return x.astype("float32") * rescale, y


def read_tflite(path: Path) -> bytes:
    """The bytes of the .tflite file at ``path``, once kerasq's checks find it well formed."""

    if not path.is_file():
        raise CliError(f"model file {str(path)!r} does not exist", EXIT_INPUT)
    flatbuffer = path.read_bytes()
    try:
        check_tflite_flatbuffer(flatbuffer)
    except InvalidTFLiteFileError as err:
        raise CliError(
            f"cannot read {str(path)!r}: it is {err}; export it again, or copy it again if it was cut short",
            EXIT_INPUT,
        ) from err
    return flatbuffer
