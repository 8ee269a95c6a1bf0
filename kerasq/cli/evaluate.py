"""``kerasq eval``: top-1 accuracy of a .keras model or a .tflite file (LiteRT or TFLite Micro) on labelled
data."""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasq.cli.exit_codes import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, CliError
from kerasq.cli.files import load_inputs, load_model, read_tflite
from kerasq.cli.info import arena_text
from kerasq.export.runtimes import InvalidTFLiteFileError, TFLMError, predict, tflite_input_names, tflm_arena


def _eval_data(data: str, names: list[str], rescale: float):
    """(x, y) for a model with inputs ``names``: one array for one input, else a dict of arrays by name."""
    if len(names) == 1:
        return load_inputs(data, rescale)
    import numpy as np

    path = Path(data)
    listed = ", ".join(repr(n) for n in names)
    if path.suffix != ".npz" or not path.is_file():
        raise CliError(
            f"--data {data!r}: the model has {len(names)} inputs ({listed}); give an .npz file holding one array "
            "per input, named after it, and the labels y",
            EXIT_INPUT,
        )
    with np.load(path) as archive:
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise CliError(
                f"{data!r} has no array named {missing[0]!r}: the model's inputs are {listed}, one array each "
                f"under its name (np.savez(path, {names[0]}=..., y=...)); the file holds {', '.join(archive.files)}",
                EXIT_INPUT,
            )
        x = {n: archive[n].astype("float32") * rescale for n in names}
        y_key = next((k for k in ("y", "labels", "targets") if k in archive.files), None)
        y = archive[y_key].reshape(-1) if y_key else None
    return x, y


def _labels(args: argparse.Namespace, y):
    if y is None:
        raise CliError(f"{args.data!r} has no labels (an array named y or labels)", EXIT_INPUT)
    return y


def _eval_tflite(args: argparse.Namespace, path: Path):
    """(probabilities, labels, TFLM arena or None) of the .tflite file at ``path`` on ``args.data``."""

    flatbuffer = read_tflite(path)
    x, y = _eval_data(args.data, tflite_input_names(flatbuffer), args.rescale)
    y = _labels(args, y)
    try:
        probs = predict(flatbuffer, x, runtime=args.runtime)
        arena = tflm_arena(flatbuffer) if args.runtime == "tflm" else None
    except TFLMError as err:
        raise CliError(str(err), EXIT_MODEL) from err
    except InvalidTFLiteFileError as err:
        raise CliError(f"cannot read {str(path)!r}: it is {err}", EXIT_INPUT) from err
    except ValueError as err:
        raise CliError(f"the data does not fit the model: {err}", EXIT_INPUT) from err
    except RuntimeError as err:
        raise CliError(f"LiteRT cannot run {str(path)!r} on this data: {err}", EXIT_MODEL) from err
    return probs, y, arena


def _eval_keras(args: argparse.Namespace):
    """(probabilities, labels) of the .keras model ``args.model`` on ``args.data``."""
    if args.runtime != "litert":
        raise CliError(f"--runtime {args.runtime} runs .tflite files; {args.model!r} is not one", EXIT_USAGE)
    model = load_model(args.model)
    names = [t.name for t in model.inputs]
    x, y = _eval_data(args.data, names, args.rescale)
    y = _labels(args, y)
    arrays = x if isinstance(x, dict) else {names[0]: x}
    for tensor in model.inputs:
        _check_sample_shape(tensor.name, arrays[tensor.name].shape[1:], tuple(tensor.shape[1:]))
    try:
        probs = model.predict([arrays[n] for n in names] if len(names) > 1 else x, batch_size=256, verbose=0)
    except ValueError as err:
        raise CliError(f"the data does not fit the model: {err}", EXIT_INPUT) from err
    return probs, y


def _check_sample_shape(name: str, got: tuple, expected: tuple) -> None:
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got, strict=True)):
        raise CliError(
            f"the data does not fit the model: input {name!r}: the data's samples have shape {tuple(got)}, the "
            f"model expects {expected} (None: any size); resize or crop the data to the model's input size",
            EXIT_INPUT,
        )


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    path = Path(args.model)
    arena = None
    if path.suffix == ".tflite":
        probs, y, arena = _eval_tflite(args, path)
    else:
        probs, y = _eval_keras(args)
    accuracy = float(np.mean(np.argmax(probs, -1) == y.astype(np.int64)) * 100.0)
    on = " on TFLite Micro" if arena is not None else ""
    print(f"{path.name}: top-1 accuracy {accuracy:.2f}% on {len(y)} samples{on}")
    if arena is not None:
        print(f"TFLM arena: {arena_text(arena)}")
    return EXIT_OK
