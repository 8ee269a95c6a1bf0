"""Randomly generated small CNNs through PTQ (``tflite`` platform), INT8 export and LiteRT.

Each seed builds a different net from stem + 2..5 random blocks (conv, depthwise, separable, residual add,
concatenation, max / average pooling, each with a random BN and activation among relu / relu6 / hard swish /
none) and a Dense head on global pooling or flatten, with random biases and batch-norm statistics. The file must
be fully integer and compute what the Keras quantized model computes: at most ``MAX_STEPS`` output steps apart
anywhere (one more after a hard swish), identical on most outputs, and with the same top-1 on almost every
sample. ``N_MODELS`` nets take about 50 s.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
from keras import layers

import kerasq
from kerasq.export import keras_export_model
from kerasq.export.runtimes import float_tensors, predict

N_MODELS = 20
SIZE = 16
N_CALIBRATION, N_TEST = 24, 48
ACTIVATIONS = (None, "relu", "relu6", "hard_swish")

# Measured over seeds 0..79 (2.5 s a net): the file is at most 1 output step from the Keras model, 2 where the
# net has a hard swish (TFLite's int8 HARD_SWISH is a fixed-point approximation: 1% of its outputs are 1-2 steps
# off, and later layers carry that on); at most 14.6% of the outputs differ at all (seeds 11 and 51); top-1
# agreement is at least 97.9%. Steps are whole numbers, so their bound is the measured one; the shares keep a
# margin. Before average pools rounded ties as TFLite does, seed 38 was 3 steps and 55% of its outputs off.
MAX_STEPS = 1.0
MAX_STEPS_HARD_SWISH = 2.0
MAX_DIFFERING_SHARE = 0.25
MIN_TOP1 = 0.95
XFAIL: dict[int, str] = {}  # seed -> owner area and the exact failure, for seeds that expose a bug elsewhere


class _Builder:
    """One random net, its layers named by what they are (``b2_dw3_s2_bn_relu6``) so a failing seed reads."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def bn_act(self, x, name: str):
        """A random batch norm (random statistics, so it is not the identity) and a random activation."""
        if self.rng.random() < 0.5:
            bn = layers.BatchNormalization(name=f"{name}_bn")
            x = bn(x)
            c = x.shape[-1]
            bn.set_weights([self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.2, c), self.rng.normal(0, 0.2, c),
                            self.rng.uniform(0.5, 2.0, c)])  # fmt: skip
        act = self.pick(ACTIVATIONS)
        if act is not None:
            x = layers.Activation(act, name=f"{name}_{act}")(x)
        return x

    def conv(self, x, name: str, filters: int | None = None, kernel: int | None = None, strides: int = 1):
        filters = filters or self.pick((4, 8, 12))
        kernel = kernel or self.pick((1, 3))
        fused = self.pick(ACTIVATIONS[:3])  # an activation inside the layer, or a separate one after it
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", activation=fused,
                          name=f"{name}_conv{kernel}_s{strides}_{fused}")(x)  # fmt: skip
        return self.bn_act(x, name) if fused is None else x

    def block(self, x, b: int):
        name, spatial = f"b{b}", x.shape[1]
        kinds = ["conv", "depthwise", "separable", "residual", "concat"] + ["pool"] * (spatial >= 4)
        kind = self.pick(kinds)
        strides = 2 if spatial >= 4 and self.rng.random() < 0.3 else 1
        if kind == "conv":
            return self.conv(x, name, strides=strides)
        if kind == "depthwise":
            y = layers.DepthwiseConv2D(3, strides=strides, padding="same", name=f"{name}_dw3_s{strides}")(x)
            return self.bn_act(y, name)
        if kind == "separable":
            y = layers.SeparableConv2D(self.pick((4, 8)), 3, padding="same", name=f"{name}_sep3")(x)
            return self.bn_act(y, name)
        if kind == "residual":
            y = self.conv(x, f"{name}_res", filters=x.shape[-1])
            x = layers.Add(name=f"{name}_add")([x, y])
            return self.bn_act(x, f"{name}_post") if self.rng.random() < 0.5 else x
        if kind == "concat":
            a = self.conv(x, f"{name}_left", kernel=1)
            c = self.conv(x, f"{name}_right", kernel=3)
            return layers.Concatenate(name=f"{name}_concat")([a, c])
        pool = self.pick((layers.MaxPooling2D, layers.AveragePooling2D))
        return pool(2, name=f"{name}_{pool.__name__}")(x)

    def build(self) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        inputs = keras.Input((SIZE, SIZE, 3), name="image")
        x = self.conv(inputs, "stem", kernel=3)
        for b in range(int(self.rng.integers(2, 6))):
            x = self.block(x, b)
        if x.shape[1] <= 4 and self.rng.random() < 0.5:
            x = layers.Flatten(name="head_flatten")(x)
        else:
            x = self.pick((layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D))(name="head_pool")(x)
        if self.rng.random() < 0.5:
            x = layers.Dense(16, activation=self.pick(("relu", None)), name="head_hidden")(x)
        model = keras.Model(inputs, layers.Dense(10, name="head_logits")(x), name=f"random_{self.seed}")
        for layer in model.layers:  # random biases: a zero bias leaves every relu threshold at 0
            weights = layer.get_weights()
            if len(weights) == 2:  # conv / depthwise / dense with a bias
                bias = self.rng.normal(0, 0.1, weights[1].shape).astype("float32")
                layer.set_weights([weights[0], bias])
        return model


def random_cnn(seed: int) -> keras.Model:
    return _Builder(seed).build()


def describe(model: keras.Model) -> str:
    return " -> ".join(layer.name for layer in model.layers[1:])


def run_seed(seed: int, workdir) -> dict:
    """PTQ on the tflite platform, INT8 export, LiteRT: the measurements the test asserts on."""
    model = random_cnn(seed)
    rng = np.random.default_rng(1000 + seed)
    calibration = rng.uniform(0, 1, (N_CALIBRATION, SIZE, SIZE, 3)).astype("float32")
    test = rng.uniform(0, 1, (N_TEST, SIZE, SIZE, 3)).astype("float32")
    tpc = kerasq.get_target_platform_capabilities("tflite")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, calibration, target_platform_capabilities=tpc
    )
    report = keras_export_model(q_model, workdir / f"random_{seed}.tflite", "tflite", "int8")
    flatbuffer = report.path.read_bytes()
    last = q_model.layers[-1]
    assert isinstance(last, kerasq.ActivationQuantizer), "the model output should be quantized"
    step = float(last.scale.numpy())
    expected = q_model.predict(test, verbose=0)
    got = predict(flatbuffer, test)
    steps = np.abs(got - expected) / step
    top = np.argmax(got, -1)
    # ties are common in quantized logits: the file agrees when its top-1 is one of Keras' top-1s
    top1 = np.mean(np.take_along_axis(expected, top[:, None], -1)[:, 0] == expected.max(-1))
    return {
        "float_tensors": float_tensors(flatbuffer),
        "requantized": [r.tensor for r in report.requantized],
        "max_steps": float(steps.max()),
        "differing": float(np.mean(steps > 0.5)),
        "top1": float(top1),
    }


@pytest.fixture(scope="module")
def timing():
    start, seen = time.perf_counter(), []
    yield seen
    print(f"\n{len(seen)} random nets in {time.perf_counter() - start:.1f} s")


def _marks(seed: int) -> list:
    return [pytest.mark.xfail(strict=True, reason=XFAIL[seed])] if seed in XFAIL else []


@pytest.mark.parametrize("seed", [pytest.param(s, marks=_marks(s)) for s in range(N_MODELS)])
def test_random_net_exports_and_matches_keras(seed, tmp_path, timing):
    result = run_seed(seed, tmp_path)
    timing.append(seed)
    layout = describe(random_cnn(seed))
    where = f"seed {seed}: {layout}: {result}"
    assert result["float_tensors"] == [], where
    assert result["requantized"] == [], where  # the tflite platform quantizes what TFLite stores
    bound = MAX_STEPS_HARD_SWISH if "hard_swish" in layout else MAX_STEPS
    assert result["max_steps"] <= bound * 1.0001, where
    assert result["differing"] <= MAX_DIFFERING_SHARE, where
    assert result["top1"] >= MIN_TOP1, where


def test_the_generator_covers_every_block_kind():
    """Over the seeds the test runs, every block kind and activation appears (else the test is narrower than it
    says)."""
    names = " ".join(describe(random_cnn(s)) for s in range(N_MODELS))
    for part in ("conv", "dw3", "sep3", "add", "concat", "MaxPooling2D", "AveragePooling2D", "bn", "relu6",
                 "hard_swish", "head_flatten", "head_pool", "_s2"):  # fmt: skip
        assert part in names, part


# Found by the random nets: an average pool of a tflite model was 1 step off on ~12% of its outputs (3 steps and
# 55% of the outputs at the end of seed 38), because TFLite rounds each integer mean half away from the stored
# int8 zero and the Keras model rounded ties to even. A 2x2 mean is a tie a quarter of the time.


def _pool_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    return keras.Model(inputs, layers.AveragePooling2D(2, name="pool")(x), name="pool_ties")


@pytest.mark.parametrize("signed", [False, True], ids=["relu_unsigned", "linear_signed"])
def test_average_pool_ties_round_as_tflite_does(signed, tmp_path):
    model = _pool_model()
    if not signed:  # a relu before the pool: an unsigned grid, stored zero 128 levels above the grid's zero
        inputs = keras.Input((8, 8, 3), name="image")
        x = layers.ReLU(name="relu")(model.get_layer("conv")(inputs))
        model = keras.Model(inputs, model.get_layer("pool")(x))
    rng = np.random.default_rng(0)
    calibration, test = rng.uniform(0, 1, (32, 8, 8, 3)), rng.uniform(0, 1, (64, 8, 8, 3))
    tpc = kerasq.get_target_platform_capabilities("tflite")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, calibration.astype("float32"), target_platform_capabilities=tpc
    )
    report = keras_export_model(q_model, tmp_path / "pool.tflite", "tflite", "int8")
    expected = q_model.predict(test.astype("float32"), verbose=0)
    got = predict(report.path.read_bytes(), test.astype("float32"))
    steps = np.abs(got - expected) / float(q_model.layers[-1].scale.numpy())
    # measured: 0.04-0.07% of the values differ (by one step, from the conv's own rounding); 8-13% before
    assert steps.max() <= 1.0001
    assert np.mean(steps > 0.5) < 0.01


def test_stored_zero_is_the_exporters_storage_convention():
    """The Keras rule needs the level that is 0 in the stored tensor; the exporter decides where the grid is
    stored. Both must agree for every width."""
    from kerasq.export.int8_graph import storage_range
    from kerasq.quantizers.grid import stored_zero

    for n_bits, qmin, qmax, zero_point in [(8, 0, 255, 37), (8, -128, 127, 0), (4, 0, 15, 3), (4, -8, 7, 0),
                                           (2, 0, 3, 1), (16, -32768, 32767, 0)]:  # fmt: skip
        q = kerasq.ActivationQuantizer(n_bits, qmin, qmax, "uniform", qmin < 0)
        q.scale.assign(0.5)
        q.zero_point.assign(float(zero_point))
        lo, _, bits = storage_range(q)
        lowest_stored_level = round(lo / 0.5 + zero_point)  # stored as -2**(bits - 1)
        assert stored_zero(qmin, qmax, n_bits) == lowest_stored_level + 2 ** (bits - 1), (n_bits, qmin, qmax)
