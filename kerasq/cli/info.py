"""``kerasq info``: the layers, bit widths and sizes of a .keras model, or the tensors, bytes and arena of a
.tflite file."""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasq.cli.exit_codes import EXIT_INPUT, EXIT_OK, CliError
from kerasq.cli.files import load_model, read_tflite
from kerasq.export.file_bytes import file_bytes
from kerasq.export.runtimes import (
    InvalidTFLiteFileError,
    RuntimeUnavailableError,
    TFLMError,
    litert_interpreter_module,
    peak_live_tensor_bytes,
    tflm_arena,
)
from kerasq.quantizers import ActivationQuantizer, QuantizeWrapper
from kerasq.resources.utilization import kernel_bytes


def arena_text(arena) -> str:
    """A TFLM arena's total bytes and its planned / persistent parts, as the commands print it."""
    return f"{arena.total:,} bytes ({arena.head:,} planned tensors and scratch + {arena.tail:,} persistent)"


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if path.suffix == ".tflite":
        return _info_tflite(path)
    model = load_model(args.model)

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

    flatbuffer = read_tflite(path)
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
        print(f"TFLM arena: {arena_text(tflm_arena(flatbuffer))}")
    except RuntimeUnavailableError:
        print('TFLM arena: tflite-micro is not installed (pip install "kerasq[tflm]")')
    except (TFLMError, InvalidTFLiteFileError) as err:
        print(f"TFLM arena: TFLite Micro cannot run this file: {err}")
    return EXIT_OK
