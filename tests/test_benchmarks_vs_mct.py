"""The arithmetic of benchmarks/vs_mct.py: budgets, kernel bytes, MACs and the issue-14 goal checks."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from benchmarks.mct_worker import budget, budget_bases, kernel_bytes, quantized_kernel_bytes
from benchmarks.vs_mct import goal, mp_time_rows, table_rows

acc = st.floats(0, 100, allow_nan=False)


def test_budgets_are_fractions_of_the_8bit_bases():
    assert budget("W8A8", 1000, 5e6) == {}
    assert budget("W4A8", 1000, 5e6) == {}
    assert budget("MP37.5", 1000, 5e6) == {"weights_memory": 375.0}
    assert budget("GPTQ-MP30", 1000, 5e6) == {"weights_memory": 300.0}
    assert budget("BOPs50", 1000, 5e6) == {"bops": 2.5e6}


def test_kernel_bytes_round_each_kernel_up():
    assert kernel_bytes([(3, 4), (3, 4)]) == 4  # 1.5 B each, rounded up per kernel
    assert kernel_bytes([(10, 8), (5, 2), (2, 32)]) == 10 + 2 + 8


def test_budget_bases_count_kernels_once_and_macs_per_output_position():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 72 params x 64 positions
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 36 params x 16 positions
    x = keras.layers.BatchNormalization()(x)  # no kernel: not counted
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))  # 192 params x 1
    k8, bops8 = budget_bases(model)
    assert k8 == 72 + 36 + 192
    assert bops8 == (72 * 64 + 36 * 16 + 192) * 64


def test_quantized_kernel_bytes_reads_wrappers_and_counts_float_kernels_at_32_bits():
    def kernel(*shape):
        return SimpleNamespace(shape=shape)

    wrapped = SimpleNamespace(layer=SimpleNamespace(kernel=kernel(4, 5)), bits={"kernel": 2})
    dw = SimpleNamespace(
        layer=SimpleNamespace(depthwise_kernel=kernel(3, 3, 7, 1)), bits={"depthwise_kernel": 4}
    )
    plain = SimpleNamespace(kernel=kernel(6), bits=None)  # left float by the tool
    other = SimpleNamespace(bits=None)  # no kernel
    model = SimpleNamespace(layers=[wrapped, dw, plain, other])
    assert quantized_kernel_bytes(model, lambda layer: layer.bits) == 5 + 32 + 24


@given(m=acc, k=acc)
def test_w8a8_goal_is_within_a_tenth_of_mct(m, k):
    assume(abs(k - (m - 0.1)) > 1e-6)
    verdict = goal("W8A8", 90.0, {"accuracy": m}, {"accuracy": k})
    assert verdict.startswith("met") == (k > m - 0.1)
    if k < m - 0.1:
        assert float(verdict.split()[2]) == pytest.approx(m - 0.1 - k, abs=0.006)


@given(f=acc, m=acc, k=acc)
def test_w4a8_goal_needs_both_mct_and_float_minus_one(f, m, k):
    assume(min(abs(k - m), abs(k - (f - 1.0))) > 1e-6)
    verdict = goal("W4A8", f, {"accuracy": m}, {"accuracy": k})
    assert verdict.startswith("met") == (k > m and k > f - 1.0)


@pytest.mark.parametrize(
    ("scenario", "kq", "expected"),
    [("MP50", 69.6, "met"), ("MP50", 69.4, "MISSED by 0.10"), ("MP37.5", 67.9, "MISSED by 0.10"),
     ("GPTQ-MP30", 65.0, "met"), ("BOPs50", 69.0, "MISSED by 1.00")],
)  # fmt: skip
def test_float_relative_goals(scenario, kq, expected):
    assert goal(scenario, 70.0, {"accuracy": 70.0}, {"accuracy": kq}).startswith(expected)


def test_mp30_goal_is_feasibility_and_float_goal_is_one_hundredth():
    infeasible = {"error": "ConfigError: budget below the smallest model"}
    assert goal("MP30", 70.0, {"accuracy": 40.0}, infeasible).startswith("MISSED")
    assert goal("MP30", 70.0, infeasible, infeasible).startswith("met")
    assert goal("float", 70.0, {"accuracy": 70.0}, {"accuracy": 70.01}).startswith("met")
    assert goal("float", 70.0, {"accuracy": 70.0}, {"accuracy": 70.02}).startswith("MISSED")


def test_failed_rows_become_numbered_notes_and_mp_time_is_relative_to_w8a8():
    spec = {"kernel8_bytes": 1000, "bops8": 1e6}
    results = {
        "float": {"mct": {"accuracy": 70.0}, "kerasq": {"accuracy": 70.0}},
        "W8A8": {"mct": {"accuracy": 69.9, "seconds": 10.0}, "kerasq": {"accuracy": 69.9, "seconds": 2.0}},
        "MP50": {"mct": {"accuracy": 69.0, "seconds": 50.0, "mp_search_s": 30.0, "bytes": 501},
                 "kerasq": {"error": "ConfigError: infeasible", "seconds": 3.0}},
    }  # fmt: skip
    notes: list[str] = []
    rows = table_rows(spec, results, notes)
    assert rows[2]["budget"] == "500 B"
    assert rows[2]["kerasq_acc"] == "failed [1]"
    assert rows[2]["mct_bytes"] == "501 (over budget)"
    assert rows[1]["mct_bytes"] is None
    assert notes == ["[1] MP50, kerasq: ConfigError: infeasible"]
    (mp,) = mp_time_rows(results)
    assert mp["mct_diff"] == pytest.approx(40.0)
    assert "kerasq_diff" not in mp  # a failed row has no mixed-precision time
    assert np.isclose(mp["mct_search"], 30.0)


def test_worker_peak_rss_is_its_own_not_the_forking_parents():
    import subprocess
    import sys
    from pathlib import Path

    held = np.ones(40_000_000)  # 320 MB resident in this (parent) process when the worker is forked
    code = "from benchmarks.mct_worker import peak_rss_mb; print(peak_rss_mb())"
    repo = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert held.sum() == 40_000_000
    assert 5 < float(out.stdout) < 150  # a bare interpreter + numpy; ru_maxrss would report >= 320
