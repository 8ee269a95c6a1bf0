"""kerasq INT8 TFLite export vs the stock TFLite converter vs float TFLite: size, accuracy, latency.

    python -m benchmarks.export [--models resnet,mobilenetv2] [--n-samples 1024] [--eval-samples 10000]

kerasq: PTQ with the ``tflite`` platform, then ``keras_export_model(..., "tflite", "int8")``. Stock: the
TFLite converter's full-integer PTQ on the same calibration samples. All three run through LiteRT with float
input/output; latency is the median over 200 single-image invocations (2 threads) after 20 warm-up runs.
"""

from __future__ import annotations

import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")


def latency_ms(flatbuffer: bytes, sample, runs: int = 200) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=2)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, sample)
    for _ in range(20):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def build(label: str, model, rep) -> bytes:
    """The flatbuffer of one row of the table."""
    import kerasq
    from benchmarks.tflite_baseline import float_tflite, stock_tflite_int8
    from kerasq.export import keras_export_model

    if label == "float TFLite":
        return float_tflite(model)
    if label == "TFLite converter int8":
        return stock_tflite_int8(model, rep)
    tpc = kerasq.get_target_platform_capabilities("tflite")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(model, rep, target_platform_capabilities=tpc)
    with tempfile.TemporaryDirectory() as tmp:
        return keras_export_model(q_model, Path(tmp) / "q.tflite", "tflite", "int8").path.read_bytes()


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import benchmark_parser

    parser = benchmark_parser("kerasq export benchmark", workers=False)
    args = parser.parse_args(argv)

    from benchmarks.common import accuracy_tflite, format_table, machine_info, publish, timed
    from benchmarks.zoo import eval_subset, get_model, load_cifar10, representative_batches

    x_train, _, x_test, y_test = load_cifar10()
    x_test, y_test = eval_subset(x_test, y_test, args.eval_samples)
    sample = x_test[:1]
    rows = []
    for name in args.models.split(","):
        model = get_model(name)
        rep = representative_batches(x_train, n_samples=args.n_samples)
        for label in ("float TFLite", "TFLite converter int8", "kerasq int8 (tflite TPC)"):
            flatbuffer, seconds = timed(build, label, model, rep)
            rows.append({
                "model": name, "method": label, "accuracy": accuracy_tflite(flatbuffer, x_test, y_test),
                "bytes": len(flatbuffer), "latency": latency_ms(flatbuffer, sample), "seconds": seconds,
            })  # fmt: skip
            print(rows[-1], flush=True)
    columns = [("model", "model"), ("method", "method"), ("accuracy", "LiteRT top-1 %"), ("bytes", "file bytes"),
               ("latency", "ms / image"), ("seconds", "build seconds")]  # fmt: skip
    header = (f"kerasq export benchmark, {datetime.date.today()}, {machine_info()}; calibration {args.n_samples} "
              f"training images, evaluation {len(y_test)} test images")  # fmt: skip
    table = format_table(rows, columns)
    publish("export", header + "\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
