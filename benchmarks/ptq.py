"""kerasq PTQ vs the stock TFLite converter on CIFAR-10 models: one run, one table.

    python -m benchmarks.ptq [--models resnet,mobilenetv2] [--n-samples 1024] [--eval-samples 10000]

Every method runs in its own fresh process so its peak RSS is its own. Columns:
- accuracy: top-1 on the CIFAR-10 test set (kerasq: the fake-quant Keras model; TFLite: LiteRT, int8 inside,
  float32 input/output);
- seconds: wall time of the quantization call (kerasq: ``keras_post_training_quantization``; TFLite:
  ``converter.convert()`` with the same calibration samples); float row: one inference pass over the
  calibration samples (batch 64, after a warm-up batch);
- x float pass: quantization seconds / float-pass seconds;
- peak RSS: the worker process's peak resident memory (TensorFlow import and model load included);
- bytes: kerasq: quantized weight bytes reported by QuantizationInfo; TFLite: flatbuffer size; float: 4 B/param.
"""

from __future__ import annotations

import datetime
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")

METHODS = ("float", "kerasq-imx500", "kerasq-tflite", "tflite-int8")
LABELS = {
    "float": "float",
    "kerasq-imx500": "kerasq W8A8 (imx500)",
    "kerasq-tflite": "kerasq W8A8 (tflite TPC)",
    "tflite-int8": "TFLite converter int8",
}


def worker(method: str, model_name: str, n_samples: int, eval_samples: int) -> dict:
    import numpy as np

    from benchmarks.common import accuracy_keras, accuracy_tflite, peak_rss_mb, timed
    from benchmarks.zoo import benchmark_inputs

    model, x_test, y_test, rep = benchmark_inputs(model_name, n_samples, eval_samples)
    row: dict = {"model": model_name, "method": LABELS[method]}
    if method == "float":
        calib = np.concatenate([b[0] for b in rep()])
        model.predict(calib[:64], verbose=0)
        _, row["seconds"] = timed(model.predict, calib, batch_size=64, verbose=0)
        row["accuracy"] = accuracy_keras(model, x_test, y_test)
        row["bytes"] = int(sum(np.prod(w.shape) for w in model.weights) * 4)
    elif method.startswith("kerasq"):
        import kerasq

        tpc = kerasq.get_target_platform_capabilities(method.split("-")[1])
        (q_model, info), row["seconds"] = timed(
            kerasq.ptq.keras_post_training_quantization, model, rep, target_platform_capabilities=tpc
        )
        row["accuracy"] = accuracy_keras(q_model, x_test, y_test)
        row["bytes"] = info.stored_weights_bytes  # kernels + biases, as the README's table reports
    else:
        from benchmarks.tflite_baseline import stock_tflite_int8

        flatbuffer, row["seconds"] = timed(stock_tflite_int8, model, rep)
        row["accuracy"] = accuracy_tflite(flatbuffer, x_test, y_test)
        row["bytes"] = len(flatbuffer)
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import benchmark_parser, forwarded

    parser = benchmark_parser("kerasq PTQ benchmark")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.n_samples, args.eval_samples)))
        return 0

    from benchmarks.common import format_table, machine_info, publish, run_rows, without_empty_error

    extra = forwarded(args, "n_samples", "eval_samples")
    rows = run_rows("benchmarks.ptq", args.models.split(","), METHODS, extra, LABELS.get)
    float_seconds = {r["model"]: r.get("seconds") for r in rows if r["method"] == LABELS["float"]}
    for row in rows:
        if row["method"] != LABELS["float"] and float_seconds.get(row["model"]) and "seconds" in row:
            row["ratio"] = row["seconds"] / float_seconds[row["model"]]
    columns = [("model", "model"), ("method", "method"), ("accuracy", "top-1 %"), ("seconds", "seconds"),
               ("ratio", "x float pass"), ("peak_rss_mb", "peak RSS MB"), ("bytes", "bytes"), ("error", "error")]  # fmt: skip
    columns = without_empty_error(columns, rows)
    table = format_table(rows, columns)
    header = (f"kerasq PTQ benchmark, {datetime.date.today()}, {machine_info()}; calibration {args.n_samples} "
              f"training images, evaluation {args.eval_samples} test images")  # fmt: skip
    publish("ptq", header + "\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
