"""kerasq gradient-based PTQ (learned rounding) vs plain PTQ on CIFAR-10 models, W4A8 and 50% mixed precision.

    python -m benchmarks.gptq [--models resnet,mobilenetv2] [--n-samples 1024] [--eval-samples 10000] [--epochs 10]

Every row runs in its own fresh process so its peak RSS is its own. Platform: the default TPC (imx500). Rows per
model: float; PTQ W4A8 (``CoreConfig(QuantizationConfig(weights_n_bits=4))``, activations 8-bit); GPTQ W4A8 (the
same config, ``keras_gradient_post_training_quantization`` with ``get_keras_gptq_config(n_epochs=--epochs)``,
defaults otherwise); PTQ MP 50% and GPTQ MP 50% (mixed precision with a weights-memory target of 50% of the
model's 8-bit weights memory, ``keras_resource_utilization_data(model, rep).weights_memory``). Calibration and
fine-tuning data: ``--n-samples`` training images in batches of 32 (``representative_batches``). Columns:
- top-1 %: top-1 accuracy of the fake-quant Keras model on ``--eval-samples`` CIFAR-10 test images (the first
  ones of a fixed random permutation, seed 0: the test file is sorted by class; the default is all 10,000);
- seconds: wall time of the whole quantization call (PTQ: statistics, mixed precision, build; GPTQ: the same
  plus Hessian scores and fine-tuning);
- GPTQ s/epoch: ``info.gptq.seconds_per_epoch`` (fine-tuning time only, divided by the epochs);
- GPTQ final loss: ``info.gptq.final_loss``, the reconstruction loss with the learned rounding hardened, on the
  first batch, relative to the PTQ rounding-to-nearest solution (PTQ = 1.00; lower is better);
- flipped %: ``100 * info.gptq.flipped``, the share of kernel values rounded away from nearest;
- peak RSS MB: the worker process's peak resident memory (TensorFlow import and model load included).

Goal checks per model: GPTQ W4A8 recovers at least half of the accuracy PTQ W4A8 lost vs float (recovered
fraction = (GPTQ - PTQ) / (float - PTQ)); GPTQ at the 50% MP budget within 1 point of float.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")

METHODS = ("float", "ptq:w4a8", "gptq:w4a8", "ptq:mp50", "gptq:mp50")
MP_FRACTION = 0.5
BATCH_SIZE = 32


def label(method: str) -> str:
    return {
        "float": "float",
        "ptq:w4a8": "PTQ W4A8",
        "gptq:w4a8": "GPTQ W4A8",
        "ptq:mp50": "PTQ MP 50%",
        "gptq:mp50": "GPTQ MP 50%",
    }[method]


def worker(method: str, model_name: str, args: argparse.Namespace) -> dict:

    import kerasq
    from benchmarks.common import accuracy_keras, peak_rss_mb, timed
    from benchmarks.zoo import benchmark_inputs
    from kerasq.core import CoreConfig, QuantizationConfig, ResourceUtilization
    from kerasq.gptq import get_keras_gptq_config, keras_gradient_post_training_quantization

    model, x_test, y_test, rep = benchmark_inputs(model_name, args.n_samples, args.eval_samples, BATCH_SIZE)
    row: dict = {"model": model_name, "method": label(method)}
    if method == "float":
        row["accuracy"] = accuracy_keras(model, x_test, y_test)
        row["peak_rss_mb"] = peak_rss_mb()
        return row

    kind, _, variant = method.partition(":")
    kwargs: dict = {}
    if variant == "w4a8":
        kwargs["core_config"] = CoreConfig(QuantizationConfig(weights_n_bits=4))
    else:
        w8_bytes = kerasq.core.keras_resource_utilization_data(model, rep).weights_memory
        kwargs["target_resource_utilization"] = ResourceUtilization(weights_memory=MP_FRACTION * w8_bytes)
        row["w8_bytes"] = w8_bytes
    if kind == "ptq":
        (q_model, info), row["seconds"] = timed(
            kerasq.ptq.keras_post_training_quantization, model, rep, **kwargs
        )
    else:
        config = get_keras_gptq_config(n_epochs=args.epochs)
        (q_model, info), row["seconds"] = timed(
            keras_gradient_post_training_quantization, model, rep, config, **kwargs
        )
        report = info.gptq
        row.update(gptq_s=report.seconds, s_per_epoch=report.seconds_per_epoch, final_loss=report.final_loss)
        row.update(flipped_pct=100.0 * report.flipped, loss=list(report.loss), steps=report.steps)
    ru = info.resource_utilization
    row["bytes"] = ru.weights_memory if ru is not None else info.weights_memory_bytes
    if info.mixed_precision is not None:
        row["bits"] = info.mixed_precision.bits
    row["accuracy"] = accuracy_keras(q_model, x_test, y_test)
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def goal_lines(model_name: str, rows: list[dict]) -> list[str]:
    by = {r["method"]: r for r in rows if r["model"] == model_name}
    fl, ptq4, gptq4, gptq_mp = (by.get(k, {}) for k in ("float", "PTQ W4A8", "GPTQ W4A8", "GPTQ MP 50%"))
    lines = [f"{model_name}:"]
    if all("accuracy" in r for r in (fl, ptq4, gptq4)):
        lost = fl["accuracy"] - ptq4["accuracy"]
        gained = gptq4["accuracy"] - ptq4["accuracy"]
        if lost > 0:
            frac = gained / lost
            lines.append(
                f"- GPTQ W4A8 recovers >= half of the PTQ W4A8 loss: {'MET' if frac >= 0.5 else 'MISSED'} "
                f"(recovered {frac:.2f} = ({gptq4['accuracy']:.2f} - {ptq4['accuracy']:.2f}) / "
                f"({fl['accuracy']:.2f} - {ptq4['accuracy']:.2f}))"
            )
        else:
            lines.append(
                f"- GPTQ W4A8 recovers >= half of the PTQ W4A8 loss: not applicable (PTQ W4A8 lost nothing: "
                f"float {fl['accuracy']:.2f}, PTQ {ptq4['accuracy']:.2f}, GPTQ {gptq4['accuracy']:.2f})"
            )
    else:
        lines.append("- GPTQ W4A8 recovers >= half of the PTQ W4A8 loss: not measured (a row failed)")
    if "accuracy" in fl and "accuracy" in gptq_mp:
        gap = fl["accuracy"] - gptq_mp["accuracy"]
        lines.append(
            f"- GPTQ MP 50% within 1 point of float: {'MET' if gap <= 1.0 else 'MISSED'} "
            f"(gap {gap:.2f} points: float {fl['accuracy']:.2f}, GPTQ MP 50% {gptq_mp['accuracy']:.2f})"
        )
    else:
        lines.append("- GPTQ MP 50% within 1 point of float: not measured (a row failed)")
    return lines


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import benchmark_parser, forwarded

    parser = benchmark_parser("kerasq gradient-based PTQ benchmark")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args)))
        return 0

    from benchmarks.common import format_table, machine_info, publish, run_rows, without_empty_error

    extra = forwarded(args, "n_samples", "eval_samples", "epochs")
    rows = run_rows("benchmarks.gptq", args.models.split(","), METHODS, extra, label)
    columns = [("model", "model"), ("method", "method"), ("accuracy", "top-1 %"), ("seconds", "seconds"),
               ("s_per_epoch", "GPTQ s/epoch"), ("final_loss", "GPTQ final loss (PTQ = 1)"),
               ("flipped_pct", "flipped %"), ("peak_rss_mb", "peak RSS MB"), ("error", "error")]  # fmt: skip
    columns = without_empty_error(columns, rows)
    header = (f"kerasq GPTQ benchmark, {datetime.date.today()}, {machine_info()} (2-core CPU machine); "
              f"platform imx500; calibration/fine-tuning {args.n_samples} training images (batch {BATCH_SIZE}), "
              f"{args.epochs} GPTQ epochs; evaluation {args.eval_samples} test images")  # fmt: skip
    goals = "\n".join(line for m in args.models.split(",") for line in goal_lines(m, rows))
    text = (f"{header}\n\nCommand: `{' '.join(['python -m benchmarks.gptq', *sys.argv[1:]])}`\n\n"
            f"{format_table(rows, columns)}\n\nGoal checks:\n\n{goals}\n")  # fmt: skip
    publish("gptq", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
