"""Shared benchmark plumbing: accuracy of Keras and LiteRT models, timing, peak memory, tables."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np


def accuracy_keras(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 250) -> float:
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == y) * 100.0)


def accuracy_tflite(flatbuffer: bytes, x: np.ndarray, y: np.ndarray, batch_size: int = 250) -> float:
    """Top-1 accuracy through the LiteRT interpreter (int8/uint8 inputs and outputs handled)."""
    from kerasq.export.runtimes import predict_litert

    probs = predict_litert(flatbuffer, x, batch_size=batch_size)
    return float(np.mean(np.argmax(probs, axis=-1) == y) * 100.0)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(module: str, args: Sequence[str], python: str | None = None, env: dict | None = None) -> dict:
    """Run ``python -m module --worker args...`` in a fresh process; it prints one JSON line last. ``python``:
    another interpreter (a tool's own venv; default this one); ``env``: its environment (default this one's)."""
    command = [python or sys.executable, "-m", module, "--worker", *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(lines[-1])


def benchmark_parser(description: str, workers: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--models``, ``--n-samples``, ``--eval-samples`` (and the hidden
    ``--worker METHOD MODEL`` of benchmarks that run each row in its own process)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default="resnet,mobilenetv2")
    parser.add_argument("--n-samples", type=int, default=1024)
    parser.add_argument("--eval-samples", type=int, default=10000)
    if workers:
        parser.add_argument("--worker", nargs=2, metavar=("METHOD", "MODEL"), help=argparse.SUPPRESS)
    return parser


def forwarded(args: argparse.Namespace, *names: str) -> list[str]:
    """``args``' values of ``names`` as command-line options again, for the worker processes."""
    return [item for name in names for item in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def without_empty_error(columns: list[tuple[str, str]], rows: list[dict]) -> list[tuple[str, str]]:
    """``columns`` minus its ``error`` column when no row failed."""
    return columns if any("error" in r for r in rows) else [c for c in columns if c[0] != "error"]


def publish(name: str, text: str) -> None:
    """Print a benchmark's report and write it to ``benchmarks/results/<name>.md``."""
    print(text)
    out = Path(__file__).parent / "results" / f"{name}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text.rstrip("\n") + "\n")


def run_rows(
    module: str, models: Sequence[str], methods: Sequence[str], extra: Sequence[str],
    label: Callable[[str], str] = str,
) -> list[dict]:  # fmt: skip
    """One row per (model, method), each from its own fresh process (``run_worker``), in that order; every row
    carries its model and method label, and is echoed to stderr as it arrives."""
    rows = []
    for model_name in models:
        for method in methods:
            row = run_worker(module, [method, model_name, *extra])
            row.setdefault("model", model_name)
            row.setdefault("method", label(method))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def machine_info() -> str:
    import os

    import tensorflow as tf

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}")  # fmt: skip


def format_table(rows: list[dict], columns: Sequence[tuple[str, str]]) -> str:
    """Markdown table; ``columns`` are (key, header) pairs; floats get two decimals."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)
