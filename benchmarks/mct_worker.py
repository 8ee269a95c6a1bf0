"""The MCT side of ``benchmarks/vs_mct.py``, and the pure helpers both sides share.

    <mct-venv>/bin/python -m benchmarks.mct_worker --worker SPEC.json SCENARIO

runs one scenario with Sony MCT 2.6.1 (TensorFlow 2.15, Keras 2) in a fresh process and prints one JSON line
(the row). It must run in MCT's own venv: this module imports neither kerasq nor Keras 3 (the Keras-2-readable
model builders of ``benchmarks.zoo`` / ``benchmarks.sensor`` use public ``keras`` API only). ``vs_mct.py``
imports the helpers below (model loading, data, scenario table, kernel bytes, MACs) into the project's Python,
so both tools load the same weights, see the same data and are counted by the same code.

Spec (JSON, written by ``vs_mct.py``): ``model`` (name), ``h5`` (a Keras file both Keras 2 and 3 read) or
``builder`` (``module:function``) + ``npz`` (the weights of every layer, in ``model.layers`` order), ``data``
(an ``.npz`` with ``x_cal``, ``x_test``, ``y_test``), ``batch`` and ``n_iter`` (calibration batches),
``kernel8_bytes`` and ``bops8`` (the budget bases), ``gptq_epochs``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")
FLOAT_BITS = 32

# name -> (algorithm, uniform weight bits or None, budgeted resource or None, fraction of its 8-bit value)
SCENARIOS: dict[str, tuple[str, int | None, str | None, float | None]] = {
    "float": ("float", None, None, None),
    "W8A8": ("ptq", None, None, None),
    "W4A8": ("ptq", 4, None, None),
    "MP75": ("ptq", None, "weights_memory", 0.75),
    "MP50": ("ptq", None, "weights_memory", 0.5),
    "MP37.5": ("ptq", None, "weights_memory", 0.375),
    "MP30": ("ptq", None, "weights_memory", 0.3),
    "BOPs50": ("ptq", None, "bops", 0.5),
    "GPTQ-MP50": ("gptq", None, "weights_memory", 0.5),
    "GPTQ-MP37.5": ("gptq", None, "weights_memory", 0.375),
    "GPTQ-MP30": ("gptq", None, "weights_memory", 0.3),
}


def budget(scenario: str, kernel8_bytes: float, bops8: float) -> dict[str, float]:
    """The ``ResourceUtilization`` keyword arguments of ``scenario`` (empty: no mixed precision)."""
    _, _, resource_name, fraction = SCENARIOS[scenario]
    if resource_name is None:
        return {}
    base = kernel8_bytes if resource_name == "weights_memory" else bops8
    return {resource_name: float(fraction * base)}


def kernel_bytes(params_and_bits: Iterable[tuple[int, int]]) -> int:
    """Bytes of kernels stored at their bit widths: sum of ``ceil(params * bits / 8)``."""
    return int(sum(math.ceil(p * b / 8) for p, b in params_and_bits))


def float_kernels(model: Any) -> list[tuple[str, int, int]]:
    """``(layer name, kernel params, MACs per sample)`` of every conv / depthwise / dense kernel of a float model.

    MACs = kernel params x output positions (the product of the output's middle dimensions: 1 for a Dense on
    vectors), which is exact for convolutions, depthwise convolutions and dense layers alike.
    """
    rows = []
    for layer in model.layers:
        for attr in KERNEL_ATTRS:
            kernel = getattr(layer, attr, None)
            if kernel is None:
                continue
            params = int(np.prod(kernel.shape))
            positions = int(np.prod(layer.output.shape[1:-1]))
            rows.append((f"{layer.name}/{attr}", params, params * positions))
    return rows


def budget_bases(model: Any) -> tuple[int, float]:
    """``(8-bit kernel bytes, BOPs at 8-bit weights and activations)`` of a float model: 1 byte per kernel
    parameter, and MACs x 8 x 8."""
    rows = float_kernels(model)
    return sum(p for _, p, _ in rows), float(sum(m for _, _, m in rows) * 8 * 8)


def quantized_kernel_bytes(model: Any, bits_of: Callable[[Any], dict[str, int] | None]) -> int:
    """Kernel bytes of a quantized model: ``bits_of(layer)`` gives a wrapper layer's ``{attr: bits}`` (None for a
    layer the tool did not wrap); the wrapped layer is ``layer.layer``. Kernels left float count 32 bits."""
    pairs = []
    for layer in model.layers:
        bits = bits_of(layer)
        inner = layer.layer if bits is not None else layer
        for attr in KERNEL_ATTRS:
            kernel = getattr(inner, attr, None)
            if kernel is not None:
                pairs.append((int(np.prod(kernel.shape)), (bits or {}).get(attr, FLOAT_BITS)))
    return kernel_bytes(pairs)


def save_layer_weights(model: Any, path: str) -> None:
    """Every layer's weights, keyed ``L<layer index>_<weight index>``, in ``model.layers`` order."""
    arrays = {
        f"L{i}_{j}": w for i, layer in enumerate(model.layers) for j, w in enumerate(layer.get_weights())
    }
    np.savez(path, n_layers=np.asarray(len(model.layers)), **arrays)


def load_model(spec: dict) -> Any:
    """The float model of ``spec``: its ``.h5`` file, or its builder with the ``.npz`` weights set layer by layer."""
    import keras

    if spec.get("h5"):
        return keras.models.load_model(spec["h5"], compile=False)
    module, _, function = spec["builder"].partition(":")
    model = getattr(importlib.import_module(module), function)()
    stored = np.load(spec["npz"])
    if int(stored["n_layers"]) != len(model.layers):
        raise ValueError(
            f"{spec['npz']}: weights of {int(stored['n_layers'])} layers, but {spec['builder']} builds "
            f"{len(model.layers)}; rebuild the weights file from the same architecture."
        )
    for i, layer in enumerate(model.layers):
        current = layer.get_weights()
        new = [stored[f"L{i}_{j}"] for j in range(len(current))]
        for j, (old, value) in enumerate(zip(current, new, strict=True)):
            if old.shape != value.shape:
                raise ValueError(
                    f"layer {i} ({layer.name}) weight {j}: file shape {value.shape}, built shape {old.shape}."
                )
        layer.set_weights(new)
    return model


def representative(x: np.ndarray, batch: int) -> Callable[[], Iterator[list[np.ndarray]]]:
    """MCT's ``representative_data_gen``: a callable whose generator yields ``[batch]`` lists, in a fixed order."""

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(0, len(x), batch):
            yield [x[i : i + batch]]

    return gen


def top1(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, batch: int = 250
) -> float:
    """Top-1 accuracy in percent; ``predict`` maps a batch of inputs to scores."""
    hits = sum(
        int(np.sum(np.argmax(predict(x[i : i + batch]), -1) == y[i : i + batch]))
        for i in range(0, len(x), batch)
    )
    return 100.0 * hits / len(x)


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, MB: ``VmHWM``, which starts afresh at ``exec``. (``ru_maxrss``
    does not: a worker forked from a parent holding 1 GB reports at least that.)"""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def accuracy_on_test(model: Any, data: Any) -> float:
    """Top-1 % of a Keras model (float or fake-quant) on the spec's test samples."""
    return top1(lambda b: model(b, training=False).numpy(), data["x_test"], data["y_test"])


def begin_row(tool: str, spec: dict, scenario: str) -> tuple[Any, Any, dict]:
    """``(float model, data, row)`` for one worker; the row of the ``float`` scenario comes back complete (its
    ``accuracy`` set), the others hold only the tool and scenario."""
    model = load_model(spec)
    data = np.load(spec["data"])
    row: dict = {"tool": tool, "scenario": scenario}
    if SCENARIOS[scenario][0] == "float":
        row["accuracy"] = accuracy_on_test(model, data)
        row["bytes"] = quantized_kernel_bytes(model, lambda layer: None)
        row["peak_rss_mb"] = peak_rss_mb()
    return model, data, row


def _mct_bits(layer: Any) -> dict[str, int] | None:
    from mct_quantizers import KerasQuantizationWrapper

    if not isinstance(layer, KerasQuantizationWrapper):
        return None
    return {attr: int(q.num_bits) for attr, q in layer.weights_quantizers.items() if isinstance(attr, str)}


def _w4_bit_width_config(model: Any) -> Any:
    """MCT's way to pin 4-bit kernels: a ``BitWidthConfig`` rule per kernel layer type of ``model``, naming the
    kernel attribute as MCT's Keras mapping does (a rule that matches no layer is an error in MCT, so only the
    types present get one)."""
    import keras
    import model_compression_toolkit as mct
    from model_compression_toolkit.core.common.network_editors import NodeTypeFilter

    config = mct.core.BitWidthConfig()
    present = {type(layer) for layer in model.layers}
    kernels = {
        keras.layers.Conv2D: "kernel",
        keras.layers.DepthwiseConv2D: "depthwise_kernel",
        keras.layers.Dense: "kernel",
    }
    for layer_type, attr in kernels.items():
        if layer_type in present:
            config.set_manual_weights_bit_width(NodeTypeFilter(layer_type), 4, attr)
    return config


def _timed_attr(owner: Any, name: str, key: str, seconds: dict[str, float]) -> None:
    """Replace ``owner.name`` by a wrapper that adds its wall time to ``seconds[key]``."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def run_mct(spec: dict, scenario: str) -> dict:
    """One row: the scenario through MCT 2.6.1 with its defaults (imx500 TPC v1.0, ``QuantizationConfig()``)."""
    import model_compression_toolkit as mct
    import model_compression_toolkit.core.runner as mct_runner

    algorithm, weights_bits, _, _ = SCENARIOS[scenario]
    model, data, row = begin_row("mct", spec, scenario)
    if "accuracy" in row:
        return row

    # time MCT's own phases by wrapping the functions it calls: the mixed-precision search (resource figures,
    # sensitivity, solve, refinement) and, for GPTQ, the Hessian scores + data loader and the training loop
    from model_compression_toolkit.gptq.keras.gptq_training import KerasGPTQTrainer

    phases: dict[str, float] = {}
    _timed_attr(mct_runner, "search_bit_width", "mp_search_s", phases)
    for method in ("_prepare_train_dataloader_sla", "_prepare_train_dataloader_for_non_sla"):
        _timed_attr(KerasGPTQTrainer, method, "gptq_hessian_s", phases)
    _timed_attr(KerasGPTQTrainer, "train", "gptq_train_s", phases)
    core = {"bit_width_config": _w4_bit_width_config(model)} if weights_bits == 4 else {}
    core_config = mct.core.CoreConfig(**core)
    rep = representative(data["x_cal"], spec["batch"])
    ru = budget(scenario, spec["kernel8_bytes"], spec["bops8"])
    kwargs: dict = {"core_config": core_config}
    if ru:
        kwargs["target_resource_utilization"] = mct.core.ResourceUtilization(**ru)
    start = time.perf_counter()
    try:
        if algorithm == "gptq":
            gptq_config = mct.gptq.get_keras_gptq_config(n_epochs=spec["gptq_epochs"])
            q_model, _ = mct.gptq.keras_gradient_post_training_quantization(model, rep, gptq_config, **kwargs)
        else:
            q_model, _ = mct.ptq.keras_post_training_quantization(model, rep, **kwargs)
    except Exception as err:  # MCT reports infeasible budgets (and everything else) by raising
        row.update(seconds=time.perf_counter() - start, error=f"{type(err).__name__}: {err}".strip())
        row["peak_rss_mb"] = peak_rss_mb()
        return row
    row["seconds"] = time.perf_counter() - start
    row.update(phases)
    row["bytes"] = quantized_kernel_bytes(q_model, _mct_bits)
    row["accuracy"] = accuracy_on_test(q_model, data)
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["--worker"]:  # the calling convention of benchmarks.common.run_worker
        args = args[1:]
    spec_path, scenario = args[:2]
    with open(spec_path) as f:
        spec = json.load(f)
    row = run_mct(spec, scenario)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
