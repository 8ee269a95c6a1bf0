"""Each QuantizationConfig correction on / off, on the CIFAR-10 MobileNetV2-style model: one table.

    python -m benchmarks.corrections [--model mobilenetv2] [--n-samples 1024] [--eval-samples 10000]

Rows: the defaults (bias correction and collapsing on, the rest off), then one knob flipped from its default.
Columns: top-1 % on the CIFAR-10 test set (the fake-quant Keras model) at W8A8 and at W4A8 (4-bit weights,
8-bit activations), and the quantization seconds of each. "applies to" counts the places the knob touches in
this model (a knob that touches nothing cannot change the result). Platform imx500; one run, in-process.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")

KNOBS = (
    ("defaults", {}),
    ("weights_bias_correction=False", {"weights_bias_correction": False}),
    ("z_threshold=8", {"z_threshold": 8.0}),
    ("shift_negative_activation_correction=False", {"shift_negative_activation_correction": False}),
    (
        "shift_negative + params_search + threshold_recalculation",
        {
            "shift_negative_params_search": True,
            "shift_negative_threshold_recalculation": True,
        },
    ),  # fmt: skip
    ("concat_threshold_update=True", {"concat_threshold_update": True}),
    ("linear_collapsing=False", {"linear_collapsing": False}),
    ("residual_collapsing=False", {"residual_collapsing": False}),
    ("relu_bound_to_power_of_2=True", {"relu_bound_to_power_of_2": True}),
)


def _applies(model, knob: dict) -> str:
    """How many places of the model a knob can touch (rewrite matches, concat nodes, ...)."""
    from kerasq.core import QuantizationConfig
    from kerasq.graph import read_model
    from kerasq.graph.rewrites import (
        bound_relu_to_power_of_2,
        collapse_linear,
        collapse_residual,
        rewrite_graph,
    )

    # the pipeline's rewrites with the optional ones off: what the knobs would act on
    plain = QuantizationConfig(linear_collapsing=False, residual_collapsing=False)
    graph = rewrite_graph(read_model(model), plain)
    count = len(graph.nodes)
    if "linear_collapsing" in knob:
        return str(count - len(collapse_linear(graph).nodes))
    if "residual_collapsing" in knob:
        return str(count - len(collapse_residual(graph).nodes))
    if "relu_bound_to_power_of_2" in knob:
        return str(
            sum(a is not b for a, b in zip(graph.nodes, bound_relu_to_power_of_2(graph).nodes, strict=True))
        )
    if "concat_threshold_update" in knob:
        return str(sum(n.kind == "concat" for n in graph.nodes))
    if "shift_negative_activation_correction" in knob:
        from kerasq.graph.rewrites.shift_negative import snc_candidates

        return f"{len(snc_candidates(graph))} candidates"
    if "weights_bias_correction" in knob:
        return str(sum(n.kind in ("conv", "dense", "depthwise_conv") for n in graph.nodes))
    return "all activations" if "z_threshold" in knob else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kerasq corrections benchmark")
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--n-samples", type=int, default=1024)
    parser.add_argument("--eval-samples", type=int, default=10000)
    args = parser.parse_args(argv)

    import kerasq
    from benchmarks.common import accuracy_keras, format_table, machine_info, publish, timed
    from benchmarks.zoo import eval_subset, get_model, load_cifar10, representative_batches
    from kerasq.core import CoreConfig, QuantizationConfig

    model = get_model(args.model)
    x_train, _, x_test, y_test = load_cifar10()
    x_test, y_test = eval_subset(x_test, y_test, args.eval_samples)
    rep = representative_batches(x_train, n_samples=args.n_samples, batch_size=64)
    rows = [{"knob": "float", "w8a8": accuracy_keras(model, x_test, y_test)}]
    for label, knob in KNOBS:
        row = {"knob": label, "applies": _applies(model, knob)}
        for key, bits in (("w8a8", 8), ("w4a8", 4)):
            core = CoreConfig(QuantizationConfig(weights_n_bits=bits, **knob))
            (q_model, _), seconds = timed(
                kerasq.ptq.keras_post_training_quantization, model, rep, core_config=core
            )
            row[key], row[f"{key}_s"] = accuracy_keras(q_model, x_test, y_test), seconds
        rows.append(row)
        print(row, file=sys.stderr)
    columns = [("knob", "knob"), ("applies", "applies to"), ("w8a8", "W8A8 top-1 %"), ("w8a8_s", "W8A8 s"),
               ("w4a8", "W4A8 top-1 %"), ("w4a8_s", "W4A8 s")]  # fmt: skip
    table = format_table(rows, columns)
    header = (f"kerasq corrections benchmark ({args.model}, imx500), {datetime.date.today()}, {machine_info()}; "
              f"calibration {args.n_samples} training images, evaluation {args.eval_samples} test images\n\n"
              f"Command: `python -m benchmarks.corrections`")  # fmt: skip
    publish("corrections", header + "\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
