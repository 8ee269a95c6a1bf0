"""Does mixed precision's sensitivity predict the damage a layer really does? Rank correlation, per model.

    python -m benchmarks.sensitivity_rank [--models cifar10model,resnet,mobilenetv2] [--test-images 10000]
        [--report sensitivity_rank]

The models, calibration (256 samples, batches of 32, ``CoreConfig(n_iter=8)``) and test data of
``benchmarks.vs_mct`` (imx500, kerasq's defaults). For every weighted layer that a weights-memory budget makes
configurable and every lower candidate width (4 and 2 bits), kerasq's sensitivity (``BitAllocator``, the numbers
the integer program minimizes: weighted normalized MSE at the interest points, on the 32 sensitivity samples) is
set against what that layer alone at that width measurably does to the whole quantized model on the test
images, every other layer at 8 bits, finished as PTQ finishes a model (error-compensated rounding of the low-bit
kernel, biases corrected; the sensitivity itself measures rounding to nearest):

- accuracy drop: top-1 points lost against the all-8-bit model (noisy where the drop is below ~0.1: one layer at
  4 bits often changes a handful of the 10,000 decisions);
- output NMSE increase: the normalized MSE of the model's outputs against the float model's, minus the all-8-bit
  model's; the quantity closest to what sensitivity estimates, measured on unseen images.

Spearman's rho between prediction and each measurement, over every (layer, width) pair of a model and per width.
"""

from __future__ import annotations

import argparse
import datetime
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")

MODELS = ("cifar10model", "resnet", "mobilenetv2")


def _nmse(q, f) -> float:
    import numpy as np

    q, f = np.asarray(q, np.float64).reshape(len(q), -1), np.asarray(f, np.float64).reshape(len(f), -1)
    return float(np.mean(np.sum((q - f) ** 2, 1) / (np.sum(f**2, 1) + 1e-12)))


def measure(name: str, test_images: int) -> tuple[list[dict], dict]:
    """(one row per layer and lower width, the model's summary row)."""
    import numpy as np
    from scipy.stats import spearmanr

    from benchmarks.mct_worker import accuracy_on_test, load_model, representative
    from benchmarks.vs_mct import CALIBRATION, DEFAULT_GPTQ_EPOCHS, prepare
    from kerasq.core import CoreConfig
    from kerasq.mixed_precision.bit_allocation import BitAllocator
    from kerasq.mixed_precision.units import apply_bits
    from kerasq.pipeline import allocation_inputs, finish
    from kerasq.pipeline import prepare as prepare_ptq

    spec = prepare(name, test_images, DEFAULT_GPTQ_EPOCHS, tflite=False)
    if spec is None:
        return [], {"model": name, "note": "model missing"}
    model, data = load_model(spec), np.load(spec["data"])
    prepared = prepare_ptq(
        model,
        representative(data["x_cal"], spec["batch"]),
        CoreConfig(n_iter=CALIBRATION // spec["batch"]),
        None,
    )
    allocator = BitAllocator.create(allocation_inputs(prepared), ["weights_memory"])
    sensitivity = allocator.ensure_sensitivity()
    units = allocator.units
    float_out = model.predict(data["x_test"], batch_size=250, verbose=0)

    def evaluate(bits: list[int]) -> tuple[float, float]:
        q_model, _ = finish(prepared, apply_bits(prepared.plan, units, bits))
        out = q_model.predict(data["x_test"], batch_size=250, verbose=0)
        return accuracy_on_test(q_model, data), _nmse(out, float_out)

    top = [u.candidates[0] for u in units]
    base_acc, base_nmse = evaluate(top)
    rows = []
    for i, unit in enumerate(units):
        for c in range(1, len(unit.candidates)):
            bits = list(top)
            bits[i] = unit.candidates[c]
            acc, nmse = evaluate(bits)
            rows.append({"model": name, "layer": unit.name, "bits": unit.candidates[c],
                         "predicted": float(sensitivity.values[i][c]), "acc_drop": base_acc - acc,
                         "nmse_increase": nmse - base_nmse})  # fmt: skip
    for row in rows:  # spearman reads the numbers; the table shows them to three significant digits
        row["predicted_text"], row["nmse_text"] = f"{row['predicted']:.3g}", f"{row['nmse_increase']:.3g}"

    def rho(subset: list[dict], measured: str) -> float:
        return float(spearmanr([r["predicted"] for r in subset], [r[measured] for r in subset])[0])

    summary = {"model": name, "layers": len(units), "pairs": len(rows), "base_acc": base_acc}
    for label, subset in [("all", rows)] + [(str(b), [r for r in rows if r["bits"] == b]) for b in (4, 2)]:
        if len(subset) > 2:
            summary[f"rho_acc_{label}"] = rho(subset, "acc_drop")
            summary[f"rho_nmse_{label}"] = rho(subset, "nmse_increase")
    return rows, summary


SUMMARY_COLUMNS = [("model", "model"), ("layers", "configurable layers"), ("pairs", "(layer, width) pairs"),
                   ("base_acc", "all-8-bit top-1 %"),
                   ("rho_nmse_all", "rho vs output NMSE, all"), ("rho_nmse_4", "rho vs output NMSE, 4-bit"),
                   ("rho_nmse_2", "rho vs output NMSE, 2-bit"), ("rho_acc_all", "rho vs accuracy drop, all"),
                   ("rho_acc_4", "rho vs accuracy drop, 4-bit"), ("rho_acc_2", "rho vs accuracy drop, 2-bit")]  # fmt: skip
ROW_COLUMNS = [("model", "model"), ("layer", "layer"), ("bits", "bits"), ("predicted_text", "predicted sensitivity"),
               ("nmse_text", "measured output NMSE increase"), ("acc_drop", "measured top-1 drop")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import format_table, machine_info, publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--report", default="sensitivity_rank")
    args = parser.parse_args(argv)
    rows, summaries = [], []
    for name in args.models.split(","):
        model_rows, summary = measure(name, args.test_images)
        rows += model_rows
        summaries.append(summary)
        print(summary, flush=True)
    header = (f"kerasq sensitivity vs measured per-layer damage, {datetime.date.today()}, {machine_info()}; "
              f"{args.test_images} test images; `python -m benchmarks.sensitivity_rank --models {args.models}`")  # fmt: skip
    text = "\n\n".join([header, format_table(summaries, SUMMARY_COLUMNS), format_table(rows, ROW_COLUMNS)])
    publish(args.report, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
