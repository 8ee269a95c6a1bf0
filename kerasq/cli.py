"""The ``kerasq`` command line: quantize, inspect and evaluate models in pipelines.

    kerasq quantize MODEL.keras --data CALIB.npz [--tpc imx500|tflite] [--error-method mse]
                    [--weights-memory 200KB|50%] [--activation-memory ...] [--bops 1.5G|50%]
                    -o OUT(.keras|.tflite|DIR) [--overwrite]
    kerasq info MODEL(.keras|.tflite)
    kerasq eval MODEL(.keras|.tflite) --data TEST.npz [--rescale 0.00392] [--runtime litert|tflm]

Without --tpc, a .tflite output is quantized for the ``tflite`` platform and any other output for ``imx500``.
An output replaces only a previous export of the same kind (a .keras / .tflite file, a SavedModel directory)
unless --overwrite is given. A multi-input model is evaluated on an .npz holding one array per input, named
after the input, and ``y``.

Exit codes: 0 success, 2 bad usage, 3 unreadable or invalid input (paths, formats, data, an output path that
cannot be written or holds something else) or a runtime that is not installed, 4 the model cannot be quantized,
exported or run as asked.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path

from kerasq.errors import KerasqError

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL = 0, 2, 3, 4
_OUTPUT_FORMATS = {".keras": "keras", ".tflite": "tflite", "": "savedmodel"}


class CliError(KerasqError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _load_model(path: str):
    import keras

    import kerasq  # noqa: F401 - registers kerasq layers for load_model

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


def _inputs(path: str, rescale: float, image_size: tuple[int, int] | None = None):
    from kerasq.data.files import load_arrays

    try:
        x, y = load_arrays(path, image_size)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise CliError(str(err), EXIT_INPUT) from err
    return x.astype("float32") * rescale, y


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}  # fmt: skip


def parse_budget(text: str, default: float, option: str) -> float:
    """``"200KB"`` / ``"1.5M"`` / ``"123456"`` (absolute) or ``"50%"`` (of ``default``, the 8-bit figure)."""
    value = text.strip().lower().replace("_", "").replace(",", "")
    try:
        if value.endswith("%"):
            result = float(value[:-1]) / 100.0 * default
        else:
            number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
            result = float(number) * _UNITS[value[len(number) :]]
    except (KeyError, ValueError):
        raise CliError(
            f"{option} {text!r}: expected bytes/operations with an optional K/M/G suffix (e.g. 200KB, 1.5G) "
            "or a percentage of the default 8-bit figure (e.g. 50%)",
            EXIT_USAGE,
        ) from None
    if not result > 0:
        raise CliError(f"{option} {text!r} must be positive", EXIT_USAGE)
    return result


def _target(args: argparse.Namespace, model, x, core, tpc):
    import kerasq

    given = {
        "weights_memory": args.weights_memory,
        "activation_memory": args.activation_memory,
        "bops": args.bops,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    default = kerasq.core.keras_resource_utilization_data(model, x[:1], core, tpc)
    limits = {k: parse_budget(v, getattr(default, k), "--" + k.replace("_", "-")) for k, v in given.items()}
    return kerasq.core.ResourceUtilization(**limits)


def cmd_quantize(args: argparse.Namespace) -> int:
    import kerasq
    from kerasq.errors import ExportTargetError
    from kerasq.export import ExportError, keras_export_model
    from kerasq.graph import UnsupportedModelError
    from kerasq.mixed_precision.solver import InfeasibleTargetError

    out = Path(args.output)
    fmt = _output_format(out, args.overwrite)  # before the work: refuse an output that cannot be written
    model = _load_model(args.model)
    size = tuple(model.inputs[0].shape[1:3]) if len(model.inputs[0].shape) == 4 else None
    x, _ = _inputs(args.data, args.rescale, size)
    x = x[: args.n_samples]
    platform = args.tpc
    if platform is None:
        platform = "tflite" if out.suffix == ".tflite" else "imx500"
        if platform == "tflite":
            print("platform: tflite (chosen for the .tflite output; pass --tpc to override)")
    try:
        core = kerasq.core.CoreConfig(kerasq.core.QuantizationConfig(
            weights_error_method=args.error_method, activation_error_method=args.error_method))  # fmt: skip
        tpc = kerasq.get_target_platform_capabilities(platform)
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from err
    try:
        target = _target(args, model, x, core, tpc)
        if args.gptq_epochs:
            q_model, info = kerasq.gptq.keras_gradient_post_training_quantization(
                model, x, kerasq.gptq.get_keras_gptq_config(args.gptq_epochs), target_resource_utilization=target,
                core_config=core, target_platform_capabilities=tpc,
            )  # fmt: skip
        else:
            q_model, info = kerasq.ptq.keras_post_training_quantization(
                model, x, target, core_config=core, target_platform_capabilities=tpc
            )
    except (ValueError, TypeError) as err:
        code = EXIT_MODEL if isinstance(err, (UnsupportedModelError, InfeasibleTargetError)) else EXIT_INPUT
        raise CliError(f"quantization failed: {err}", code) from err
    qfmt = "int8" if fmt == "tflite" and not args.fake_quant else "fakely_quant"
    try:
        report = keras_export_model(q_model, out, serialization_format=fmt, quantization_format=qfmt,
                                    integer_io=args.integer_io, int4_weights=args.int4_weights,
                                    overwrite=args.overwrite, verify=not args.no_verify)  # fmt: skip
    except ExportTargetError as err:  # something appeared at the output path meanwhile
        raise CliError(f"export failed: {err}", EXIT_INPUT) from err
    except (ExportError, ValueError) as err:
        unwritable = isinstance(err.__cause__, OSError)  # the output path, not the model
        raise CliError(f"export failed: {err}", EXIT_INPUT if unwritable else EXIT_MODEL) from err
    print(info.summary())
    print(report.summary())
    if fmt == "tflite" and qfmt == "int8":
        from kerasq.export.sizes import packed_size

        print(f"{packed_size(q_model, report.size_bytes):,} bytes with sub-8-bit weights bit-packed")
        print(_activation_memory_line(info.resource_utilization.activation_memory, Path(report.path)))
    return EXIT_OK


def _output_format(out: Path, overwrite: bool) -> str:
    """The serialization format the output's suffix asks for, once the output can be written there."""
    from kerasq.export.keras_export import check_export_target

    fmt = _OUTPUT_FORMATS.get(out.suffix)
    if fmt is None:
        raise CliError(
            f"-o {str(out)!r}: kerasq cannot write {out.suffix!r} files; use a name ending in .keras (Keras "
            "archive) or .tflite (TFLite / LiteRT), or a folder name without a suffix (TensorFlow SavedModel)",
            EXIT_INPUT,
        )
    try:
        check_export_target(out, fmt, overwrite)
    except KerasqError as err:
        raise CliError(str(err), EXIT_INPUT) from err
    return fmt


def _activation_memory_line(estimate: float, path: Path) -> str:
    """kerasq's activation-memory estimate, and TFLM's arena for the file when tflite-micro is installed."""
    from kerasq.export.runtimes import RuntimeUnavailableError, TFLMError, tflm_arena

    line = f"activation memory: {estimate:,.0f} bytes (kerasq's estimate)"
    try:
        arena = tflm_arena(path.read_bytes())
    except RuntimeUnavailableError:
        return line  # no TFLite Micro here: nothing to compare with
    except TFLMError as err:
        return f"{line}; TFLite Micro cannot run {path.name}: {err}"
    return f"{line}; TFLM arena for {path.name}: {_arena_text(arena)}"


def _arena_text(arena) -> str:
    return f"{arena.total:,} bytes ({arena.head:,} planned tensors and scratch + {arena.tail:,} persistent)"


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if path.suffix == ".tflite":
        return _info_tflite(path)
    model = _load_model(args.model)
    from kerasq.quantizers import ActivationQuantizer, QuantizeWrapper
    from kerasq.resources.utilization import kernel_bytes

    total = 0
    print(f"{'layer':40s} {'type':24s} {'weight bits':>11s} {'params':>9s} {'bytes':>9s}")
    for layer in model.layers:
        params = sum(int(w.numpy().size) for w in layer.trainable_weights)
        if isinstance(layer, QuantizeWrapper):
            kernels = {n: int(getattr(layer.layer, n).numpy().size) for n in layer.kernel_quantizers}
            bits = "/".join(str(s.n_bits) for s in layer.kernel_quantizers.values())
            size = sum(
                int(kernel_bytes(kernels[n], s.n_bits, packed=True))
                for n, s in layer.kernel_quantizers.items()
            )
            size += (params - sum(kernels.values())) * 4
            name, kind = layer.layer.name, type(layer.layer).__name__
        elif isinstance(layer, ActivationQuantizer):
            print(f"{layer.name:40s} {'ActivationQuantizer':24s} {'a' + str(layer.n_bits):>11s}")
            continue
        else:
            bits, size, name, kind = ("32" if params else "-"), params * 4, layer.name, type(layer).__name__
        total += size
        print(f"{name:40s} {kind:24s} {bits:>11s} {params:9d} {size:9d}")
    print(f"weights memory: {total:,} bytes")
    return EXIT_OK


def _info_tflite(path: Path) -> int:
    import numpy as np

    from kerasq.export.file_bytes import file_bytes
    from kerasq.export.runtimes import (
        InvalidTFLiteFileError,
        RuntimeUnavailableError,
        TFLMError,
        litert_interpreter_module,
        peak_live_tensor_bytes,
        tflm_arena,
    )

    flatbuffer = _read_tflite(path)
    try:
        interpreter = litert_interpreter_module().Interpreter(model_content=flatbuffer)
        peak = peak_live_tensor_bytes(flatbuffer)
    except (ValueError, RuntimeError) as err:
        raise CliError(f"cannot read {str(path)!r} as a TFLite model: {err}", EXIT_INPUT) from err
    details = interpreter.get_tensor_details()
    counts: dict[str, int] = {}
    for d in details:
        counts[np.dtype(d["dtype"]).name] = counts.get(np.dtype(d["dtype"]).name, 0) + 1
    print(f"{path}: {path.stat().st_size:,} bytes, {len(details)} tensors")
    print(f"file bytes: {file_bytes(flatbuffer).describe()}")
    print("tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    for kind, items in (
        ("input", interpreter.get_input_details()),
        ("output", interpreter.get_output_details()),
    ):
        for d in items:
            scale, zero_point = d["quantization"]
            shape = [int(v) for v in d["shape"]]
            print(
                f"{kind}: {d['name']} {shape} {np.dtype(d['dtype']).name} scale={scale:g} zero_point={zero_point}"
            )
    print(
        f"activation memory: {peak:,} bytes (kerasq's estimate for the file: peak of live tensors in its "
        "operator order)"
    )
    try:
        print(f"TFLM arena: {_arena_text(tflm_arena(flatbuffer))}")
    except RuntimeUnavailableError:
        print('TFLM arena: tflite-micro is not installed (pip install "kerasq[tflm]")')
    except (TFLMError, InvalidTFLiteFileError) as err:
        print(f"TFLM arena: TFLite Micro cannot run this file: {err}")
    return EXIT_OK


def _read_tflite(path: Path) -> bytes:
    """The bytes of the .tflite file at ``path``, once kerasq's checks find it well formed."""
    from kerasq.export.runtimes import InvalidTFLiteFileError, check_tflite_flatbuffer

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


def _eval_data(data: str, names: list[str], rescale: float):
    """(x, y) for a model with inputs ``names``: one array for one input, else a dict of arrays by name."""
    if len(names) == 1:
        return _inputs(data, rescale)
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
    from kerasq.export.runtimes import (
        InvalidTFLiteFileError,
        TFLMError,
        predict,
        tflite_input_names,
        tflm_arena,
    )

    flatbuffer = _read_tflite(path)
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
    model = _load_model(args.model)
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
        print(f"TFLM arena: {_arena_text(arena)}")
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasq", description="Quantize Keras 3 models for edge devices.")
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize", help="post-training quantization, then export")
    q.add_argument("model", help="float model (.keras)")
    q.add_argument("--data", required=True, help="calibration data: .npz, .npy or a folder of images")
    q.add_argument(
        "--tpc", default=None,
        help="target platform: imx500 or tflite (default: tflite for a .tflite output, imx500 otherwise)",
    )  # fmt: skip
    q.add_argument(
        "--error-method", default="mse", help="threshold error method: mse, mae, lp, kl, no_clipping"
    )
    for option, example in (("weights-memory", "200KB"), ("activation-memory", "64KB"), ("bops", "1.5G")):
        q.add_argument(
            f"--{option}",
            help=f"mixed-precision budget: absolute ({example}) or %% of the 8-bit figure (50%%)",
        )
    q.add_argument(
        "--gptq-epochs", type=_non_negative, default=0,
        help="then fine-tune the weight rounding for N epochs over the calibration data (label-free; 0: off)",
    )  # fmt: skip
    q.add_argument(
        "--n-samples", type=_positive, default=1024, help="calibration samples to use (default 1024)"
    )
    q.add_argument("--rescale", type=float, default=1.0, help="multiply input data by this (e.g. 1/255)")
    q.add_argument(
        "--fake-quant", action="store_true", help=".tflite output: float graph with fake-quant ops"
    )
    q.add_argument("--integer-io", action="store_true", help=".tflite INT8 output: int8 inputs and outputs")
    q.add_argument(
        "--int4-weights", action="store_true",
        help=".tflite INT8 output: store kernels of at most 4 bits as int4 (two per byte)",
    )  # fmt: skip
    q.add_argument(
        "--no-verify", action="store_true",
        help=".tflite INT8 output: skip the check of the file against the Keras model on calibration samples",
    )  # fmt: skip
    q.add_argument(
        "-o", "--output", required=True, help="output: .keras, .tflite, or a directory (SavedModel)"
    )
    q.add_argument(
        "--overwrite", action="store_true",
        help="replace whatever is at the output path (by default only a previous export of the same kind)",
    )  # fmt: skip
    q.set_defaults(func=cmd_quantize)
    i = sub.add_parser("info", help="layers, bit widths and sizes of a .keras or .tflite model")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)
    e = sub.add_parser("eval", help="top-1 accuracy of a .keras or .tflite model on labelled data")
    e.add_argument("model")
    e.add_argument(
        "--data",
        required=True,
        help=".npz with x and y arrays (a multi-input model: one array per input name)",
    )
    e.add_argument(
        "--rescale", type=float, default=1.0, help="multiply input data (every input) by this (e.g. 1/255)"
    )
    e.add_argument(
        "--runtime", choices=("litert", "tflm"), default="litert",
        help=".tflite files: run with LiteRT (default) or TensorFlow Lite Micro (prints its arena bytes)",
    )  # fmt: skip
    e.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"kerasq {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except ImportError as err:
        from kerasq.export.runtimes import RuntimeUnavailableError

        if not isinstance(err, RuntimeUnavailableError):
            raise
        print(f"kerasq {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
