"""kerasq mixed precision on CIFAR-10 models: weight-memory budgets, same-size uniform baselines, target search.

    python -m benchmarks.mixed_precision [--models resnet,mobilenetv2] [--n-samples 1024] [--eval-samples 10000]

Every row runs in its own fresh process so its peak RSS is its own. Platform: the default TPC (imx500, weight
candidates 8/4/2 bits). Table 1 columns:
- budget % of 8-bit: the weights-memory target as a fraction of the model's weights memory at 8 bits
  (``keras_resource_utilization_data``); uniform b-bit rows: b/8, the same-size baseline of the MP row;
- weights bytes: achieved weights memory (``info.resource_utilization.weights_memory``; float: 4 B/param);
- accuracy: top-1 % on the CIFAR-10 test set (the fake-quant Keras model);
- seconds: wall time of the ``keras_post_training_quantization`` call (statistics, mixed precision, build);
- sensitivity s / solve s: ``info.mixed_precision.seconds`` (sensitivity measurement, integer program);
- peak RSS: the worker process's peak resident memory (TensorFlow import and model load included).

Table 2: ``keras_accuracy_target_search`` with ``evaluate_fn`` = top-1 on ``--search-samples`` test images and
``max_accuracy_drop``; the final model and the float model are then scored on the remaining test images (held
out from the search). The two slices come from a fixed random permutation (seed 0): the CIFAR-10 test file is
sorted by class, so ``x_test[:2000]`` would hold only classes 0 and 1. Seconds: the whole search call; evaluations: calls of ``evaluate_fn``.

Goal checks: MP at 50% vs float and vs uniform 4-bit; the MP search's own time (sensitivity + solve of the
MP 50% row) vs the W8 PTQ time x (1 + 3 candidates).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")

FRACTIONS = (0.75, 0.5, 0.375)
N_CANDIDATES = 3  # imx500 weight candidates: 8/4/2 bits


def methods() -> list[str]:
    return ["float", "w8"] + [m for f in FRACTIONS for m in (f"mp:{f}", f"uniform:{int(8 * f)}")]


def label(method: str) -> str:
    kind, _, arg = method.partition(":")
    return {
        "float": "float",
        "w8": "W8 (PTQ)",
        "mp": f"MP {arg}",
        "uniform": f"uniform {arg}-bit",
        "search": "search",
    }[kind]


def worker(method: str, model_name: str, args: argparse.Namespace) -> dict:
    import numpy as np

    import kerasq
    from benchmarks.common import accuracy_keras, peak_rss_mb, timed
    from benchmarks.zoo import benchmark_inputs
    from kerasq.core import CoreConfig, QuantizationConfig, ResourceUtilization

    model, x_test, y_test, rep = benchmark_inputs(model_name, args.n_samples, args.eval_samples)
    w8_bytes = kerasq.core.keras_resource_utilization_data(model, rep).weights_memory
    row: dict = {"model": model_name, "method": label(method), "w8_bytes": w8_bytes}
    ptq = kerasq.ptq.keras_post_training_quantization
    kind, _, arg = method.partition(":")
    if kind == "search":
        from kerasq.budget_search import keras_accuracy_target_search

        # the test file is sorted by class: split a fixed random permutation, not x_test[:n] / x_test[n:]
        order = np.random.default_rng(0).permutation(len(x_test))
        search, held = order[: args.search_samples], order[args.search_samples :]
        x_search, y_search, x_held, y_held = x_test[search], y_test[search], x_test[held], y_test[held]
        res, row["seconds"] = timed(
            keras_accuracy_target_search, model, rep, lambda m: accuracy_keras(m, x_search, y_search),
            max_accuracy_drop=args.max_drop,
        )  # fmt: skip
        row.update(drop=args.max_drop, budget=res.budget, budget_pct=100.0 * res.budget / w8_bytes)
        row.update(evaluations=res.evaluations, meets_target=res.meets_target, float_search=res.float_metric)
        row["bytes"] = res.info.resource_utilization.weights_memory
        row["accuracy"] = accuracy_keras(res.model, x_held, y_held)
        row["float_accuracy"] = accuracy_keras(model, x_held, y_held)
        row["probes"] = [(p.budget, p.metric, p.meets_target) for p in res.probes]
    elif kind == "float":
        row.update(budget_pct=None, bytes=int(sum(np.prod(w.shape) for w in model.weights) * 4))
        row["accuracy"] = accuracy_keras(model, x_test, y_test)
    else:
        if kind == "w8":
            call, row["budget_pct"] = (lambda: ptq(model, rep)), 100.0
        elif kind == "mp":
            target = ResourceUtilization(weights_memory=float(arg) * w8_bytes)
            call, row["budget_pct"] = (lambda: ptq(model, rep, target)), 100.0 * float(arg)
        else:
            config = CoreConfig(QuantizationConfig(weights_n_bits=int(arg)))
            call, row["budget_pct"] = (lambda: ptq(model, rep, core_config=config)), 100.0 * int(arg) / 8
        (q_model, info), row["seconds"] = timed(call)
        ru = info.resource_utilization
        row["bytes"] = ru.weights_memory if ru is not None else info.weights_memory_bytes
        if info.mixed_precision is not None:
            row["sensitivity_s"] = info.mixed_precision.seconds.get("sensitivity")
            row["solve_s"] = info.mixed_precision.seconds.get("solve")
            row["bits"] = info.mixed_precision.bits
        row["accuracy"] = accuracy_keras(q_model, x_test, y_test)
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def goal_lines(model_name: str, rows: list[dict]) -> list[str]:
    by = {r["method"]: r for r in rows if r["model"] == model_name}
    fl, mp, u4, w8 = (by.get(k, {}) for k in ("float", "MP 0.5", "uniform 4-bit", "W8 (PTQ)"))
    lines = [f"{model_name}:"]
    if "accuracy" in fl and "accuracy" in mp:
        drop = fl["accuracy"] - mp["accuracy"]
        lines.append(f"- MP 50% within 2 points of float: {'yes' if drop <= 2 else 'no'} ({drop:.2f})")
    if "accuracy" in mp and "accuracy" in u4:
        lines.append(f"- MP 50% beats uniform 4-bit by: {mp['accuracy'] - u4['accuracy']:.2f} points")
    if mp.get("sensitivity_s") is not None and "seconds" in w8:
        search = mp["sensitivity_s"] + (mp.get("solve_s") or 0.0)
        ptq = w8["seconds"] * (1 + N_CANDIDATES)
        lines.append(f"- MP search seconds (sensitivity+solve) vs PTQ seconds x 4: {search:.2f} vs {ptq:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import benchmark_parser, forwarded

    parser = benchmark_parser("kerasq mixed-precision benchmark")
    parser.add_argument("--search-samples", type=int, default=2000)
    parser.add_argument("--max-drop", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args)))
        return 0

    from benchmarks.common import format_table, machine_info, publish, run_rows, without_empty_error

    extra = forwarded(args, "n_samples", "eval_samples", "search_samples", "max_drop")
    models = args.models.split(",")
    rows = run_rows("benchmarks.mixed_precision", models, methods(), extra)
    search_rows = run_rows("benchmarks.mixed_precision", models, ["search"], extra)
    for row in search_rows:
        row["budget"] = int(row["budget"]) if "budget" in row else None
    columns = [("model", "model"), ("method", "method"), ("budget_pct", "budget % of 8-bit"),
               ("bytes", "weights bytes"), ("accuracy", "top-1 %"), ("seconds", "seconds"),
               ("sensitivity_s", "sensitivity s"), ("solve_s", "solve s"), ("peak_rss_mb", "peak RSS MB"),
               ("error", "error")]  # fmt: skip
    search_columns = [("model", "model"), ("drop", "allowed drop"), ("budget", "chosen budget bytes"),
                      ("budget_pct", "% of 8-bit"), ("evaluations", "evaluations"),
                      ("accuracy", "final top-1 % (held-out)"), ("float_accuracy", "float top-1 % (held-out)"),
                      ("seconds", "seconds"), ("peak_rss_mb", "peak RSS MB"), ("error", "error")]  # fmt: skip
    columns, search_columns = (
        without_empty_error(columns, rows),
        without_empty_error(search_columns, search_rows),
    )
    held = max(args.eval_samples - args.search_samples, 0)
    header = (f"kerasq mixed-precision benchmark, {datetime.date.today()}, {machine_info()} (2-core CPU machine); "
              f"platform imx500; calibration {args.n_samples} training images, evaluation {args.eval_samples} "
              f"test images")  # fmt: skip
    goals = "\n".join(line for m in args.models.split(",") for line in goal_lines(m, rows))
    text = (f"{header}\n\nCommand: `{' '.join(['python -m benchmarks.mixed_precision', *sys.argv[1:]])}`\n\n"
            f"Budgets and same-size uniform baselines:\n\n{format_table(rows, columns)}\n\n"
            f"Accuracy-target search (evaluate_fn: top-1 on {args.search_samples} test images drawn with seed 0; "
            f"final and float accuracy on the other {held} test images):\n\n{format_table(search_rows, search_columns)}\n\n"
            f"Goal checks:\n\n{goals}\n")  # fmt: skip
    publish("mixed_precision", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
