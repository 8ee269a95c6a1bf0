"""Same behaviour across two kerasq source trees: the same quantizations, hashed, side by side.

For a refactoring that must not change results (moves, splits, renamed modules), run both trees on the same
models and data and compare what users get: the quantized model's weights and predictions (sha256), the
reported bytes, the mixed-precision widths, and the exported INT8 file (sha256).

    python -m benchmarks.same_behaviour --before /path/to/old/checkout --after /path/to/new/checkout

Each tree runs in its own process, its folder first on ``sys.path``. Models: MobileNetV2 (alpha 0.35, 32 px) and a
Conv1D sensor net, random weights (seed 0), 64 random calibration samples. Cases: PTQ on imx500 and tflite (with
INT8 export), 4-bit weights with HMSE, mixed precision at half the 8-bit weights memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from typing import Any

import numpy as np

from benchmarks.common import format_table, machine_info, publish, run_worker

CASES = ("imx500", "tflite", "w4_hmse", "mp50")


def _digest(arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:16]


def _models() -> dict[str, Any]:
    import keras

    def sensor() -> keras.Model:
        inputs = keras.Input((64, 6))
        x = keras.layers.Conv1D(16, 5, activation="relu")(inputs)
        x = keras.layers.SeparableConv1D(24, 3, padding="same", activation="swish")(x)
        x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x))
        return keras.Model(inputs, keras.layers.Dense(5)(x))

    def mobilenet() -> keras.Model:
        return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)

    return {"mobilenetv2": (mobilenet, (32, 32, 3)), "sensor": (sensor, (64, 6))}


def _case_arguments(case: str, model: Any, data: Any) -> dict[str, Any]:
    import kerasq
    from kerasq.core import (
        CoreConfig,
        MixedPrecisionQuantizationConfig,
        QuantizationConfig,
        ResourceUtilization,
    )

    if case == "tflite":
        return {"target_platform_capabilities": kerasq.get_target_platform_capabilities("tflite")}
    if case == "w4_hmse":
        qc = QuantizationConfig(weights_n_bits=4, weights_error_method="hmse")
        return {"core_config": CoreConfig(quantization_config=qc)}
    if case == "mp50":
        full = kerasq.core.keras_resource_utilization_data(model, data)
        mp = MixedPrecisionQuantizationConfig(num_of_images=16)
        return {
            "target_resource_utilization": ResourceUtilization(weights_memory=full.weights_memory * 0.5),
            "core_config": CoreConfig(mixed_precision_config=mp),
        }
    return {}


def worker(model_name: str, case: str, tree: str) -> dict[str, Any]:
    sys.path.insert(0, tree)  # before the first kerasq import: this tree's kerasq, not the one installed
    import keras

    import kerasq
    from kerasq.export import keras_export_model

    kerasq.set_progress(False)
    keras.utils.set_random_seed(0)
    make, shape = _models()[model_name]
    model = make()
    x = np.random.default_rng(0).normal(size=(64, *shape)).astype("float32")

    def data() -> Any:
        return iter([[x[i : i + 16]] for i in range(0, 64, 16)])

    quantized, info = kerasq.ptq.keras_post_training_quantization(
        model, data, **_case_arguments(case, model, data)
    )
    row: dict[str, Any] = {
        "weights": _digest(quantized.weights), "predictions": _digest([quantized.predict(x[:8], verbose=0)]),
        "weights_memory": info.weights_memory_bytes, "stored": info.stored_weights_bytes,
        "bits": "-" if info.mixed_precision is None else "".join(map(str, info.mixed_precision.bits)),
        "kerasq": os.path.dirname(os.path.dirname(kerasq.__file__)),
    }  # fmt: skip
    if case in ("imx500", "tflite"):
        with tempfile.TemporaryDirectory() as tmp:
            report = keras_export_model(quantized, os.path.join(tmp, "q.tflite"), "tflite", "int8")
            row["file"] = _digest([np.frombuffer(report.path.read_bytes(), np.uint8)])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="kerasq source tree (the folder holding kerasq/)")
    parser.add_argument("--after", help="the other kerasq source tree")
    parser.add_argument("--report", default="same_behaviour")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    if not (args.before and args.after):
        parser.error("give both --before and --after (the two source trees to compare)")
    keys = ("weights", "predictions", "weights_memory", "stored", "bits", "file")
    rows, same = [], 0
    for model_name in _models():
        for case in CASES:
            result = {}
            for side in ("before", "after"):
                tree = os.path.abspath(getattr(args, side))
                result[side] = run_worker("benchmarks.same_behaviour", [model_name, case, tree])
                if "error" not in result[side] and result[side]["kerasq"] != tree:
                    raise SystemExit(
                        f"the {side} worker imported kerasq from {result[side]['kerasq']}, not {tree}"
                    )
            ok = "error" not in result["before"] and "error" not in result["after"]
            equal = ok and all(result["before"].get(k) == result["after"].get(k) for k in keys)
            same += equal
            rows.append({"model": model_name, "case": case, "same": "yes" if equal else "NO",
                         **{f"{k}": result["after"].get(k, result["after"].get("error")) for k in keys}})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr)
    columns = [("model", "model"), ("case", "case"), ("same", "identical"), ("weights", "weights sha256"),
               ("predictions", "predictions sha256"), ("weights_memory", "weights memory B"),
               ("stored", "stored B"), ("bits", "MP bits"), ("file", "INT8 file sha256")]  # fmt: skip
    header = (
        f"kerasq same-behaviour check, {machine_info()}; before: {args.before}, after: {args.after}; "
        f"{same} of {len(rows)} cases identical"
    )
    publish(args.report, header + "\n\nCommand: `python -m benchmarks.same_behaviour --before ... --after ...`\n\n"
            + format_table(rows, columns))  # fmt: skip


if __name__ == "__main__":
    main()
