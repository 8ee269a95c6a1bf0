"""``kerasq quantize``: post-training quantization of a .keras model under optional budgets, then export."""

from __future__ import annotations

import argparse
from pathlib import Path

import kerasq
from kerasq.cli.exit_codes import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, CliError
from kerasq.cli.files import load_inputs, load_model
from kerasq.cli.info import arena_text
from kerasq.errors import ExportTargetError, KerasqError
from kerasq.export import ExportError, keras_export_model
from kerasq.export.keras_export import check_export_target
from kerasq.export.runtimes import RuntimeUnavailableError, TFLMError, tflm_arena
from kerasq.export.sizes import packed_size
from kerasq.graph import UnsupportedModelError
from kerasq.mixed_precision.solver import InfeasibleTargetError

_OUTPUT_FORMATS = {".keras": "keras", ".tflite": "tflite", "": "savedmodel"}

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

    out = Path(args.output)
    fmt = _output_format(out, args.overwrite)  # before the work: refuse an output that cannot be written
    model = load_model(args.model)
    size = tuple(model.inputs[0].shape[1:3]) if len(model.inputs[0].shape) == 4 else None
    x, _ = load_inputs(args.data, args.rescale, size)
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
        print(f"{packed_size(q_model, report.size_bytes):,} bytes with sub-8-bit weights bit-packed")
        resources = info.resource_utilization
        assert resources is not None, "PTQ reports the quantized model's resource utilization"
        print(_activation_memory_line(resources.activation_memory, Path(report.path)))
    return EXIT_OK


def _output_format(out: Path, overwrite: bool) -> str:
    """The serialization format the output's suffix asks for, once the output can be written there."""

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

    line = f"activation memory: {estimate:,.0f} bytes (kerasq's estimate)"
    try:
        arena = tflm_arena(path.read_bytes())
    except RuntimeUnavailableError:
        return line  # no TFLite Micro here: nothing to compare with
    except TFLMError as err:
        return f"{line}; TFLite Micro cannot run {path.name}: {err}"
    return f"{line}; TFLM arena for {path.name}: {arena_text(arena)}"
