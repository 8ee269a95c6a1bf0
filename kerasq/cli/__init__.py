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

import os
import sys

from kerasq.cli.exit_codes import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, CliError
from kerasq.cli.parser import build_parser
from kerasq.cli.quantize import parse_budget
from kerasq.export.runtimes import RuntimeUnavailableError

__all__ = [
    "EXIT_INPUT",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
    "parse_budget",
]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"kerasq {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except ImportError as err:
        if not isinstance(err, RuntimeUnavailableError):
            raise
        print(f"kerasq {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT
