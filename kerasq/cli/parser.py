"""The argument parser of the ``kerasq`` command: one sub-command per task, each calling its ``cmd_*``."""

from __future__ import annotations

import argparse

from kerasq.cli.evaluate import cmd_eval
from kerasq.cli.info import cmd_info
from kerasq.cli.quantize import cmd_quantize


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
    """The ``kerasq`` parser: sub-commands quantize, info and eval; each sets ``func``, its ``cmd_*``."""
    parser = argparse.ArgumentParser(prog="kerasq", description="Quantize Keras 3 models for edge devices.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_quantize(sub)
    _add_info(sub)
    _add_eval(sub)
    return parser


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    """``kerasq quantize``: model, calibration data, platform, budgets, GPTQ, output format options."""
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


def _add_info(sub: argparse._SubParsersAction) -> None:
    """``kerasq info MODEL``."""
    i = sub.add_parser("info", help="layers, bit widths and sizes of a .keras or .tflite model")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    """``kerasq eval MODEL --data``, with the input rescale and the runtime for .tflite files."""
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
