"""kerasq side by side with Sony MCT 2.6.1 (and Google's ai-edge-quantizer) on the same models, weights and data.

    python -m benchmarks.vs_mct [--models cifar10model,sensor,resnet,mobilenetv2] [--scenarios W8A8,...]
                                [--test-images 10000] [--gptq-epochs N] [--quick]

Tools, each in its own fresh process per row (so seconds and peak RSS are the row's own):
- MCT 2.6.1 (``benchmarks/mct_worker.py``) in its own venv: ``tensorflow-cpu==2.15.1`` +
  ``model-compression-toolkit==2.6.1`` (MCT 2.6.1 needs TensorFlow <= 2.15, so Keras 2), created by this script
  when missing with ``python -m venv`` + ``pip install`` of those pins, reused when present. Location:
  ``$KERASQ_BENCH_MCT_VENV``, default ``~/.cache/kerasq-bench/mct-venv``. Defaults everywhere: imx500 TPC v1.0,
  ``QuantizationConfig()``, ``MixedPrecisionQuantizationConfig()``.
- kerasq (this checkout, the project's Python: Keras 3, TensorFlow 2.21), defaults everywhere (imx500).
- ai-edge-quantizer 0.10.0 on the float ``.tflite`` of the same model (converted from the Keras 3 model by the
  stock TFLite converter), accuracy from running its output file with LiteRT: recipe ``static_wi8_ai8`` for W8A8,
  and ``add_static_config(activation_num_bits=8, weight_num_bits=4)`` (int4 channel-wise weights, int8
  activations) for W4A8. ``pip install --dry-run ai-edge-quantizer`` here conflicts with nothing (it adds
  immutabledict, litert-lm-builder, tomli), so its venv (``$KERASQ_BENCH_AEQ_VENV``, default
  ``~/.cache/kerasq-bench/aeq-venv``) is made with ``--system-site-packages``: it runs on the project's own
  LiteRT and numpy, and leaves the project's environment untouched.

Models:
- ``cifar10model``: the pretrained VGG-style CIFAR-10 CNN (969k parameters, raw 0-255 pixels) of the
  ``cifar-10-model`` wheel on PyPI (``pip download --no-deps cifar-10-model==7.4.0`` into
  ``~/.cache/kerasq-bench/cifar-10-model`` and unzipped, when missing). Its ``.h5`` (saved by Keras 2) is read
  by both Keras 2 and Keras 3, so both tools load that file.
- ``sensor``: the Conv1D model of ``benchmarks/sensor.py`` (deterministic synthetic accelerometer data),
  trained by this script once and cached in ``~/.cache/kerasq-bench/vs_mct/sensor``.
- ``resnet``, ``mobilenetv2``: the repo's zoo models (``benchmarks/zoo.py``), taken from their cached ``.keras``
  files only (skipped with a note when missing; train them with ``python -m benchmarks.zoo``).
Keras 2 cannot read a Keras 3 file, so the MCT side rebuilds the sensor and zoo architectures with the same
builder functions and sets every layer's weights from an ``.npz`` in ``model.layers`` order; the kerasq side
loads the same ``.npz`` the same way, and the float row checks that both give the same test accuracy.

Data (identical for the tools, written once to an ``.npz`` both read): calibration = 256 training samples
(CIFAR-10: the first of a seed-0 permutation of ``cifar10_train.npz``), fed as MCT's ``representative_data_gen``
yielding ``[batch]`` lists of 32 (n_iter = 8 batches; kerasq gets ``CoreConfig(n_iter=8)`` as well); GPTQ
fine-tunes on the same 256. Test: ``--test-images`` samples (CIFAR-10: ``zoo.eval_subset``, a seed-0
permutation of the test file, which is sorted by class; all 10,000 in file order by default). CIFAR-10 zoo
models see pixels / 255, the ``cifar-10-model`` net raw pixels.

Scenarios (``mct_worker.SCENARIOS``): W8A8 (default PTQ); W4A8 (every conv / depthwise / dense kernel 4-bit,
activations 8-bit: MCT ``BitWidthConfig.set_manual_weights_bit_width`` on Conv2D / DepthwiseConv2D / Dense
kernels, kerasq ``QuantizationConfig(weights_n_bits=4)``); MP75 / MP50 / MP37.5 / MP30
(``ResourceUtilization(weights_memory=f * K8)``, K8 = the float model's conv / depthwise / dense kernel
parameters x 1 byte, computed once by ``mct_worker.budget_bases`` and passed to both); BOPs50
(``ResourceUtilization(bops=0.5 * B8)``, B8 = MACs x 8 x 8 over the same kernels); GPTQ-MP50 / GPTQ-MP37.5 /
GPTQ-MP30 (each tool's ``keras_gradient_post_training_quantization`` with ``get_keras_gptq_config(n_epochs=E)``,
same E both sides, at that weights budget).

Columns per tool: top-1 % of the quantized (fake-quant) Keras model on the test samples; seconds of the
quantization call; the worker process's peak RSS (TensorFlow import and model load included); kernel bytes
actually used, counted from the quantized model by ``mct_worker.quantized_kernel_bytes`` for both tools:
``ceil(params * bits / 8)`` per kernel of each tool's quantization wrapper, and 32 bits for a kernel the tool left
float (MCT 2.6.1's imx500 TPC does not map Conv1D, so it leaves those kernels float). Mixed-precision time: MCT's
``search_bit_width`` (the function its runner calls: resource figures, sensitivity, solve, refinement) timed by
wrapping it in the worker; kerasq's search time is ``info.mixed_precision.seconds`` summed without its ``grids``
entry (resources, sensitivity, solve, joint check), and the ratio compares those two. Like for like: MCT's
``calculate_quantization_params`` computes every candidate's quantization parameters (all bit widths of every
configurable layer) before ``search_bit_width`` starts, outside that timer; kerasq searches the same grids (the
plan's at its widths and every unit's at each candidate) in ``grids``, timed apart before its sensitivity. The
table shows ``grids`` and the total (``info.mixed_precision.seconds`` summed, grids included) as well, both next
to the row's seconds minus the W8A8 row's seconds.

MCT rows are cached (``~/.cache/kerasq-bench/vs_mct/mct_rows``, keyed by a digest of the weights, the data, the
calibration protocol, the scenario and the GPTQ epochs): MCT 2.6.1 does not change between runs, so a re-run
measures kerasq (and ai-edge-quantizer) again and reuses MCT's rows, with the date they were measured (the
report says how many were reused). ``--fresh-mct`` runs them again. This matters for GPTQ: MCT's default
``get_keras_gptq_config`` computes per-sample Hessian scores for sample-layer attention on all 256 samples
before training, 95% of its GPTQ time (382 of 399 s per row for the ResNet here, 12 minutes on a busier machine),
whatever the epochs; its 5 training epochs took 4-10 s, kerasq's whole GPTQ rows 9-12 s. So the default of 5 GPTQ
epochs (``--gptq-epochs``) costs little on either side. Measured on this 2-core machine (shared): all four
models with GPTQ on ``sensor`` and ``resnet`` took 39 minutes with no MCT row cached (13 of them MCT's two
ResNet GPTQ rows) and 12 minutes with MCT's rows cached; ``--gptq-models`` limits where GPTQ runs.

Goals (issue 14, "Must show"), checked per row on kerasq vs MCT and float: W8A8 and MP75 >= MCT - 0.1; W4A8 >=
MCT and >= float - 1; MP50 >= float - 0.5; MP37.5 >= float - 2; MP30 feasible wherever MCT's is; GPTQ-MP30 (not
in the default scenarios) >= float - 5; BOPs50 >= MCT; the float row: both sides' float accuracy within 0.01;
mixed-precision search time <= 1/5 of MCT's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")

from benchmarks.mct_worker import (  # noqa: E402 - numpy-only helpers shared with the MCT venv
    SCENARIOS,
    accuracy_on_test,
    begin_row,
    budget,
    load_model,
    peak_rss_mb,
    quantized_kernel_bytes,
    representative,
)

REPO = Path(__file__).resolve().parents[1]
MCT_PINS = ("tensorflow-cpu==2.15.1", "model-compression-toolkit==2.6.1")
AEQ_PINS = ("ai-edge-quantizer==0.10.0",)
CIFAR_WHEEL = "cifar-10-model==7.4.0"
CALIBRATION, BATCH = 256, 32
ROW_FORMAT = 2  # bump when what a worker measures changes: cached MCT rows of other formats are not reused
MODELS = ("cifar10model", "sensor", "resnet", "mobilenetv2")
TOOLS = ("mct", "kerasq", "aeq")
AEQ_SCENARIOS = ("float", "W8A8", "W4A8")
DEFAULT_GPTQ_EPOCHS = 5
VERSIONS = "TensorFlow 2.15.1, Keras 2.15, model-compression-toolkit 2.6.1; ai-edge-quantizer 0.10.0"
DEFAULT_SCENARIOS = [s for s in SCENARIOS if s not in ("float", "GPTQ-MP30")]


def bench_cache() -> Path:
    return Path(os.environ.get("KERASQ_BENCH_CACHE", Path.home() / ".cache" / "kerasq-bench"))


def ensure_venv(path: Path, packages: tuple[str, ...], probe: str, system_site: bool = False) -> str:
    """The venv's python at ``path``: reused when it imports ``probe``, created and ``pip install``ed otherwise."""
    python = path / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", f"import {probe}"], capture_output=True).returncode == 0
    ):
        return str(python)
    print(f"creating {path} with {' '.join(packages)} (a few minutes, once)", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "venv", *(["--system-site-packages"] * system_site), str(path)], check=True
    )
    subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
    return str(python)


def cifar10_model_h5() -> Path:
    """``cnn_model.h5`` of the ``cifar-10-model`` wheel, downloaded (``--no-deps``) and unpacked when missing."""
    folder = bench_cache() / "cifar-10-model"
    h5 = folder / "w" / "cifar_10_model" / "trained_models" / "cnn_model.h5"
    if not h5.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", CIFAR_WHEEL, "-d", str(folder)]
        subprocess.run(cmd, check=True)
        with zipfile.ZipFile(next(folder.glob("cifar_10_model-*.whl"))) as wheel:
            wheel.extractall(folder / "w")
    return h5


def _cifar10(test_images: int, scale: float) -> dict:
    import numpy as np

    from benchmarks.zoo import data_dir, eval_subset

    train, test = np.load(data_dir() / "cifar10_train.npz"), np.load(data_dir() / "cifar10_test.npz")
    picked = np.random.default_rng(0).permutation(len(train["y"]))[:CALIBRATION]
    x_test, y_test = eval_subset(test["x"], test["y"].reshape(-1), test_images)
    return {"x_cal": train["x"][picked].astype("float32") / scale,
            "x_test": x_test.astype("float32") / scale, "y_test": y_test.astype("int64")}  # fmt: skip


def prepare(name: str, test_images: int, gptq_epochs: int, tflite: bool) -> dict | None:
    """The spec both tools' workers read (model, data and budget files under the cache); None: model missing."""
    import keras
    import numpy as np

    from benchmarks import sensor, zoo
    from benchmarks.mct_worker import budget_bases, save_layer_weights

    work = bench_cache() / "vs_mct" / name
    work.mkdir(parents=True, exist_ok=True)
    spec: dict = {"model": name}
    if name == "cifar10model":
        spec["h5"] = str(cifar10_model_h5())
        model = load_model(spec)
        data = _cifar10(test_images, 1.0)
    else:
        if name == "sensor":
            model = sensor.get_model(work)
            x_cal, _ = sensor.make_data(CALIBRATION, "train")
            x_test, y_test = sensor.make_data(test_images, "test")
            data = {"x_cal": x_cal, "x_test": x_test, "y_test": y_test}
            spec["builder"] = "benchmarks.sensor:build"
        else:
            path = zoo.cache_dir() / f"{name}.keras"
            if not path.exists():
                print(f"note: {path} does not exist, skipping {name} (python -m benchmarks.zoo {name})")
                return None
            model = keras.models.load_model(path)
            data = _cifar10(test_images, 255.0)
            spec["builder"] = f"benchmarks.zoo:build_{name}"
        spec["npz"] = str(work / "weights.npz")
        save_layer_weights(model, spec["npz"])
        rebuilt = load_model(spec)
        probe = data["x_test"][:64]
        if not np.array_equal(rebuilt.predict(probe, verbose=0), model.predict(probe, verbose=0)):
            raise RuntimeError(
                f"{name}: {spec['builder']} + {spec['npz']} does not reproduce the cached model"
            )
    spec["data"] = str(work / f"data_{test_images}.npz")
    np.savez(spec["data"], **data)
    spec["kernel8_bytes"], spec["bops8"] = budget_bases(model)
    spec["fingerprint"] = fingerprint([*model.get_weights(), *data.values()], BATCH, CALIBRATION)
    spec.update(
        batch=BATCH, n_iter=CALIBRATION // BATCH, gptq_epochs=gptq_epochs, params=model.count_params()
    )
    if tflite:
        from benchmarks.tflite_baseline import float_tflite

        spec["tflite"] = str(work / "float.tflite")
        Path(spec["tflite"]).write_bytes(float_tflite(model))
    spec_path = work / f"spec_{test_images}.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    spec["path"] = str(spec_path)
    return spec


def fingerprint(arrays: list, *extra: object) -> str:
    """A digest of the model weights, the data and the calibration protocol: MCT rows are cached under it."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256(repr((MCT_PINS, ROW_FORMAT, extra)).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def mct_row(spec: dict, scenario: str, python: str, env: dict, fresh: bool) -> dict:
    """MCT's row for ``scenario``: from the cache when this model, data, protocol, scenario (and GPTQ epochs) ran
    before (MCT 2.6.1 does not change, so re-runs of this benchmark only measure kerasq again), else computed.
    Rows are cached when the worker finished, including those where MCT refused the budget."""
    from benchmarks.common import run_worker

    epochs = f"_e{spec['gptq_epochs']}" if SCENARIOS[scenario][0] == "gptq" else ""
    path = bench_cache() / "vs_mct" / "mct_rows" / f"{spec['fingerprint']}_{scenario}{epochs}.json"
    if path.exists() and not fresh:
        return {**json.loads(path.read_text()), "cached": True}
    row = run_worker("benchmarks.mct_worker", [spec["path"], scenario], python=python, env=env)
    if row.get("tool") == "mct":
        path.parent.mkdir(parents=True, exist_ok=True)
        row["date"] = str(datetime.date.today())
        path.write_text(json.dumps(row))
    return row


def _kerasq_bits(layer: object) -> dict[str, int] | None:
    from kerasq import QuantizeWrapper

    if not isinstance(layer, QuantizeWrapper):
        return None
    return {name: int(q.n_bits) for name, q in layer.kernel_quantizers.items()}


def run_kerasq(spec: dict, scenario: str) -> dict:
    """One row: the scenario through kerasq with its defaults (imx500)."""
    import kerasq
    from benchmarks.common import timed
    from kerasq.core import CoreConfig, QuantizationConfig, ResourceUtilization

    algorithm, weights_bits, _, _ = SCENARIOS[scenario]
    model, data, row = begin_row("kerasq", spec, scenario)
    if "accuracy" in row:
        return row
    core_config = CoreConfig(QuantizationConfig(weights_n_bits=weights_bits), n_iter=spec["n_iter"])
    ru = budget(scenario, spec["kernel8_bytes"], spec["bops8"])
    kwargs: dict = {"core_config": core_config}
    if ru:
        kwargs["target_resource_utilization"] = ResourceUtilization(**ru)
    rep = representative(data["x_cal"], spec["batch"])
    try:
        if algorithm == "gptq":
            gptq_config = kerasq.gptq.get_keras_gptq_config(n_epochs=spec["gptq_epochs"])
            call = kerasq.gptq.keras_gradient_post_training_quantization
            (q_model, info), row["seconds"] = timed(call, model, rep, gptq_config, **kwargs)
        else:
            (q_model, info), row["seconds"] = timed(
                kerasq.ptq.keras_post_training_quantization, model, rep, **kwargs
            )
    except kerasq.KerasqError as err:
        row.update(error=f"{type(err).__name__}: {err}", peak_rss_mb=peak_rss_mb())
        return row
    if info.mixed_precision is not None:
        seconds = info.mixed_precision.seconds
        search = {k: v for k, v in seconds.items() if k != "grids"}  # like MCT's search_bit_width
        row.update(
            mp_search_s=sum(search.values()), mp_grids_s=seconds.get("grids"), mp_seconds=dict(seconds)
        )
    if info.resource_utilization is not None:
        row["kerasq_weights_memory"] = info.resource_utilization.weights_memory
    row["bytes"] = quantized_kernel_bytes(q_model, _kerasq_bits)
    row["accuracy"] = accuracy_on_test(q_model, data)
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def _aeq_w4a8() -> object:
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(
        ".*", qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=4
    )
    return manager.get_quantization_recipe()


def run_aeq(spec: dict, scenario: str) -> dict:
    """One row: ai-edge-quantizer on the float ``.tflite``, accuracy of its output file under LiteRT."""
    import time

    import numpy as np

    from benchmarks.common import accuracy_tflite

    data = np.load(spec["data"])
    x_test, y_test = data["x_test"], data["y_test"]
    flatbuffer = Path(spec["tflite"]).read_bytes()
    row: dict = {"tool": "aeq", "scenario": scenario}
    if scenario == "float":
        row.update(accuracy=accuracy_tflite(flatbuffer, x_test, y_test), file_bytes=len(flatbuffer))
        row["peak_rss_mb"] = peak_rss_mb()
        return row
    from importlib.metadata import version

    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    row["version"] = version("ai-edge-quantizer")
    start = time.perf_counter()
    try:
        qt = quantizer.Quantizer(flatbuffer, recipe.static_wi8_ai8() if scenario == "W8A8" else _aeq_w4a8())
        signature, details = next(iter(Interpreter(model_content=flatbuffer).get_signature_list().items()))
        (input_name,) = details["inputs"]
        x_cal = data["x_cal"]
        samples = [{input_name: x_cal[i : i + 1]} for i in range(len(x_cal))]
        result = qt.quantize(qt.calibrate({signature: samples}), enable_progress_report=False)
        quantized = bytes(result.quantized_model)
        row["seconds"] = time.perf_counter() - start
        row.update(accuracy=accuracy_tflite(quantized, x_test, y_test), file_bytes=len(quantized))
    except Exception as err:  # report why this recipe does not apply, as the row
        row.update(seconds=time.perf_counter() - start, error=f"{type(err).__name__}: {err}")
    row["peak_rss_mb"] = peak_rss_mb()
    return row


# ---- goals of issue 14 ("Must show"), one per scenario --------------------------------------------------------


def _acc(row: dict | None) -> float | None:
    return None if row is None or "accuracy" not in row else float(row["accuracy"])


def _verdict(margin: float, what: str) -> str:
    return f"met ({what}, {margin:+.2f})" if margin >= -1e-9 else f"MISSED by {-margin:.2f} ({what})"


def goal(scenario: str, float_acc: float | None, mct: dict | None, kq: dict | None) -> str:
    """The issue's goal for ``scenario`` checked on the rows: "met (...)", "MISSED by x (...)" or why not measured.
    ``float_acc``: the float model's accuracy (kerasq side)."""
    m, k = _acc(mct), _acc(kq)
    if scenario == "float":
        if m is None or k is None:
            return "not measured (a float row failed)"
        diff = abs(m - k)
        return f"{'met' if diff <= 0.01 + 1e-9 else 'MISSED'} (same float accuracy on both sides: difference {diff:.2f})"
    if scenario == "MP30" and mct is not None and kq is not None:
        if m is not None and k is None:
            return "MISSED (kerasq infeasible where MCT's is feasible)"
        return "met (feasible wherever MCT's is)" if k is not None else "met (infeasible for both)"
    if kq is None:
        return "not measured (kerasq not run)"
    if k is None:
        return "not measured (kerasq row failed)"
    if scenario in ("W8A8", "MP75"):
        return "not measured (MCT row failed)" if m is None else _verdict(k - (m - 0.1), ">= MCT - 0.1")
    if scenario == "W4A8":
        if m is None or float_acc is None:
            return "not measured (MCT or float row failed)"
        return _verdict(min(k - m, k - (float_acc - 1.0)), ">= MCT and >= float - 1")
    if scenario == "BOPs50":
        return "not measured (MCT row failed)" if m is None else _verdict(k - m, ">= MCT")
    limits = {"MP50": 0.5, "MP37.5": 2.0, "GPTQ-MP30": 5.0}
    if scenario in limits and float_acc is not None:
        return _verdict(k - (float_acc - limits[scenario]), f">= float - {limits[scenario]:g}")
    return "no goal" + (f" (vs MCT {k - m:+.2f})" if m is not None else "")


# ---- tables ---------------------------------------------------------------------------------------------------


def _budget_cell(scenario: str, spec: dict) -> str:
    ru = budget(scenario, spec["kernel8_bytes"], spec["bops8"])
    if "weights_memory" in ru:
        return f"{ru['weights_memory']:,.0f} B"
    return f"{ru['bops'] / 1e9:.3f} GBOPs" if "bops" in ru else "-"


def table_rows(spec: dict, results: dict[str, dict[str, dict]], notes: list[str]) -> list[dict]:
    """One flat row per scenario for ``format_table``; failures become "failed [n]" with the message in ``notes``."""
    float_acc = _acc(results.get("float", {}).get("kerasq"))
    rows = []
    for scenario, by_tool in results.items():
        row: dict = {"scenario": scenario, "budget": _budget_cell(scenario, spec), "float": float_acc}
        limit = budget(scenario, spec["kernel8_bytes"], spec["bops8"]).get("weights_memory", float("inf"))
        for tool in TOOLS:
            r = by_tool.get(tool)
            if r is None:
                continue
            if "error" in r:
                notes.append(f"[{len(notes) + 1}] {scenario}, {tool}: {r['error']}")
                row[f"{tool}_acc"] = f"failed [{len(notes)}]"
            else:
                row[f"{tool}_acc"] = r.get("accuracy")
            for key in ("seconds", "peak_rss_mb", "bytes", "file_bytes"):
                row[f"{tool}_{key}"] = r.get(key)
            if r.get("bytes") is not None and r["bytes"] > limit * (1 + 1e-9):
                row[f"{tool}_bytes"] = f"{r['bytes']} (over budget)"
        row["goal"] = goal(scenario, float_acc, by_tool.get("mct"), by_tool.get("kerasq"))
        mct_bytes = by_tool.get("mct", {}).get("bytes")
        if mct_bytes is not None and mct_bytes > limit * (1 + 1e-9):
            row["goal"] += f"; MCT over budget ({mct_bytes:,} B)"
        rows.append(row)
    return rows


COLUMNS = [("scenario", "scenario"), ("budget", "budget"), ("float", "float %"),
           ("mct_acc", "MCT %"), ("mct_seconds", "MCT s"), ("mct_peak_rss_mb", "MCT RSS MB"),
           ("mct_bytes", "MCT kernel B"), ("kerasq_acc", "kerasq %"), ("kerasq_seconds", "kerasq s"),
           ("kerasq_peak_rss_mb", "kerasq RSS MB"), ("kerasq_bytes", "kerasq kernel B"),
           ("aeq_acc", "ai-edge-quantizer %"), ("aeq_file_bytes", "ai-edge-quantizer file B"),
           ("goal", "goal (issue 14)")]  # fmt: skip


def mp_time_rows(results: dict[str, dict[str, dict]]) -> list[dict]:
    """Mixed-precision time per budgeted scenario: each tool's own search time and row seconds minus W8A8's."""
    base = {tool: results.get("W8A8", {}).get(tool, {}).get("seconds") for tool in ("mct", "kerasq")}
    rows = []
    for scenario, by_tool in results.items():
        if SCENARIOS[scenario][2] is None or SCENARIOS[scenario][0] == "gptq":
            continue
        row: dict = {"scenario": scenario}
        for tool in ("mct", "kerasq"):
            r = by_tool.get(tool, {})
            row[f"{tool}_search"] = r.get("mp_search_s")
            if tool == "kerasq" and r.get("mp_grids_s") is not None:
                row["kerasq_grids"] = r["mp_grids_s"]
                row["kerasq_total"] = r["mp_search_s"] + r["mp_grids_s"]
            if r.get("seconds") is not None and base[tool] is not None and "error" not in r:
                row[f"{tool}_diff"] = r["seconds"] - base[tool]
        if row.get("mct_search") and row.get("kerasq_search") is not None:
            ratio = row["kerasq_search"] / row["mct_search"]
            row["ratio"] = ratio
            row["goal"] = f"{'met' if ratio <= 0.2 else 'MISSED'} (<= 0.20)"
        rows.append(row)
    return rows


MP_COLUMNS = [("scenario", "scenario"), ("mct_search", "MCT search_bit_width s"),
              ("mct_diff", "MCT row s - W8A8 s"), ("kerasq_search", "kerasq search s (no grids)"),
              ("kerasq_grids", "kerasq candidate grids s"), ("kerasq_total", "kerasq info.mixed_precision s"),
              ("kerasq_diff", "kerasq row s - W8A8 s"), ("ratio", "kerasq / MCT (search)"),
              ("goal", "goal: <= 1/5 of MCT")]  # fmt: skip


def report(specs: dict[str, dict], results: dict[str, dict], args: argparse.Namespace, command: str) -> str:
    from benchmarks.common import format_table, machine_info

    cached = [r for m in results.values() for by in m.values() for r in by.values() if r.get("cached")]
    dates = sorted({r.get("date", "?") for r in cached})
    reuse = f"{len(cached)} MCT rows reused from the cache (measured {', '.join(dates)}). " if cached else ""
    lines = [f"kerasq vs MCT 2.6.1 vs ai-edge-quantizer, {datetime.date.today()}; kerasq side: {machine_info()}; "
             f"MCT side: {VERSIONS} (2-core CPU machine)", "", f"Command: `{command}`", "",
             f"Calibration {CALIBRATION} samples (batches of {BATCH}, n_iter {CALIBRATION // BATCH}), "
             f"{args.test_images} test samples, GPTQ {args.gptq_epochs} epochs on both sides. {reuse}"
             "Definitions: module docstring of `benchmarks/vs_mct.py`.", ""]  # fmt: skip
    for name, spec in specs.items():
        notes: list[str] = []
        rows = table_rows(spec, results[name], notes)
        lines += [f"## {name} ({spec['params']:,} params; 8-bit kernel bytes {spec['kernel8_bytes']:,}, "
                  f"BOPs at 8 bits {spec['bops8']:.4g})", "", format_table(rows, COLUMNS), ""]  # fmt: skip
        lines += [*notes, ""] if notes else []
        skipped = [s for s in DEFAULT_SCENARIOS if SCENARIOS[s][0] == "gptq" and s not in results[name]]
        if skipped and args.gptq_models is not None and name not in args.gptq_models.split(","):
            lines += [
                f"{', '.join(skipped)}: not run on this model (`--gptq-models {args.gptq_models}`).",
                "",
            ]
        mp = mp_time_rows(results[name])
        if mp:
            lines += ["Mixed-precision time (seconds):", "", format_table(mp, MP_COLUMNS), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--scenarios", default=None, help=f"comma-separated, of {', '.join(list(SCENARIOS)[1:])}"
    )
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--gptq-epochs", type=int, default=DEFAULT_GPTQ_EPOCHS)
    parser.add_argument(
        "--quick", action="store_true", help="1,000 test images, 1 GPTQ epoch, W8A8/W4A8/MP50"
    )
    parser.add_argument("--report", default=None, help="results file name (default vs_mct, vs_mct_quick)")
    parser.add_argument("--gptq-models", default=None, help="models the GPTQ scenarios run on (default: all)")
    parser.add_argument(
        "--fresh-mct", action="store_true", help="run MCT rows again instead of using the cache"
    )
    parser.add_argument("--render", default=None, help="only re-render the report of a run's last_rows.json")
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "SPEC", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:  # the report of a finished run again, from its rows file (e.g. after changing the goals)
        from benchmarks.common import publish

        saved = json.loads(Path(args.render).read_text())
        publish(args.report or "vs_mct", report(saved["specs"], saved["results"], args, saved["command"]))
        return 0
    if args.worker:
        tool, spec_path, scenario = args.worker
        spec = json.loads(Path(spec_path).read_text())
        print(json.dumps({"kerasq": run_kerasq, "aeq": run_aeq}[tool](spec, scenario)))
        return 0
    if args.quick:
        args.test_images, args.gptq_epochs = min(args.test_images, 1000), 1
        args.scenarios = args.scenarios or "W8A8,W4A8,MP50"
    scenarios = ["float", *(args.scenarios.split(",") if args.scenarios else DEFAULT_SCENARIOS)]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)[1:]}")
    tools = args.tools.split(",")
    gptq_models = args.models.split(",") if args.gptq_models is None else args.gptq_models.split(",")

    from benchmarks.common import publish, run_worker

    pythons = {"kerasq": sys.executable}
    if "mct" in tools:
        pythons["mct"] = ensure_venv(
            Path(os.environ.get("KERASQ_BENCH_MCT_VENV", bench_cache() / "mct-venv")), MCT_PINS,
            "model_compression_toolkit",
        )  # fmt: skip
    if "aeq" in tools:
        pythons["aeq"] = ensure_venv(
            Path(os.environ.get("KERASQ_BENCH_AEQ_VENV", bench_cache() / "aeq-venv")), AEQ_PINS,
            "ai_edge_quantizer", system_site=True,
        )  # fmt: skip
    # the MCT venv sees this checkout for benchmarks.* only (mct_worker imports neither kerasq nor Keras 3)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    specs: dict[str, dict] = {}
    results: dict[str, dict] = {}
    for name in args.models.split(","):
        spec = prepare(name, args.test_images, args.gptq_epochs, "aeq" in tools)
        if spec is None:
            continue
        specs[name], results[name] = spec, {}
        for scenario in scenarios:
            if SCENARIOS[scenario][0] == "gptq" and name not in gptq_models:
                continue
            results[name][scenario] = {}
            for tool in tools:
                if tool == "aeq" and scenario not in AEQ_SCENARIOS:
                    continue
                if tool == "mct":
                    row = mct_row(spec, scenario, pythons["mct"], env, args.fresh_mct)
                else:
                    row = run_worker("benchmarks.vs_mct", [tool, spec["path"], scenario], pythons[tool], env)
                results[name][scenario][tool] = row
                print(json.dumps({"model": name, **row}), file=sys.stderr)
    command = " ".join(["python -m benchmarks.vs_mct", *sys.argv[1:]])
    raw = bench_cache() / "vs_mct" / "last_rows.json"
    raw.write_text(json.dumps({"command": command, "specs": specs, "results": results}, indent=1))
    publish(
        args.report or ("vs_mct_quick" if args.quick else "vs_mct"), report(specs, results, args, command)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
