"""Models kerasq cannot read and calibration data that does not fit the model: a kerasq error that names the
model, layer or input and says what to do."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from bad_input.matrix import Case, check, images, params, tiny_model, two_input_model

import kerasq
from kerasq.errors import DataError, ModelError, UnsupportedModelError
from kerasq.qat import trainable_quantization_params

ptq = kerasq.ptq.keras_post_training_quantization
DATA = "kerasq/data (representative.py)"


class Doubler(keras.Model):
    def call(self, x):
        return x * 2


def _subclassed() -> keras.Model:
    net = Doubler(name="doubler")
    net(np.zeros((1, 2), "float32"))
    return net


def _nan_kernel_model() -> keras.Model:
    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="relu", name="broken")(inputs))
    kernel, bias = model.get_layer("broken").get_weights()
    kernel[1, 2] = np.nan
    model.get_layer("broken").set_weights([kernel, bias])
    return model


def _lora_model() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, lora_rank=2, name="adapted")(inputs))


def _lambda_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Lambda(lambda t: t * 2, name="times_two")(x)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3)(x))


def _data_case(id: str, data, names: tuple[str, ...], reason: str, model=tiny_model, today="builtin") -> Case:
    return Case(id, lambda: ptq(model(), data() if callable(data) else data), names, DATA, reason, today)


_FLOAT_RAISES = "raises a builtin ValueError"

MODELS = [
    Case(
        "model=subclassed",
        lambda: ptq(_subclassed(), np.zeros((4, 2), "float32")),
        ("'doubler'", "subclassed"),
    ),
    Case("model='model.keras'", lambda: ptq("model.keras", images()), ("keras.Model", "str")),
    Case("model=ndarray", lambda: ptq(images(), images()), ("keras.Model", "ndarray")),
    Case("model=function", lambda: ptq(lambda t: t, images()), ("keras.Model", "function")),
    Case("model=Dense layer", lambda: ptq(keras.layers.Dense(3), images()), ("keras.Model", "Dense")),
    Case("model=None", lambda: ptq(None, images()), ("keras.Model", "NoneType")),
    Case(
        "model=Sequential without inputs",
        lambda: ptq(keras.Sequential([keras.layers.Dense(2)], name="no_input"), np.zeros((4, 3), "float32")),
        ("'no_input'", "not built", r"keras\.Input"),
    ),
    Case(
        "model=NaN kernel", lambda: ptq(_nan_kernel_model(), np.ones((4, 4), "float32")), ("'broken'", "NaN")
    ),
    Case(
        "model=Dense with LoRA weights",
        lambda: ptq(_lora_model(), np.ones((4, 4), "float32")),
        ("'adapted'", "LoRA"),
        owner="kerasq/graph (weights.py)",
        reason="named_weights raises a builtin ValueError",
    ),
    Case(
        "resource_utilization_data(model=subclassed)",
        lambda: kerasq.core.keras_resource_utilization_data(_subclassed()),
        ("subclassed",),
    ),
    Case(
        "qat(model=float model)",
        lambda: trainable_quantization_params(tiny_model()),
        ("'tiny'", "quantizers"),
    ),
    Case("qat(model='q.keras')", lambda: trainable_quantization_params("q.keras"), ("keras.Model", "str")),
    Case("qat(trainable='yes')", lambda: trainable_quantization_params(tiny_model(), "yes"), ("trainable",)),
]

DATA_CASES = [
    _data_case("data=wrong sample shape", images(4, (9, 9, 3)), ("'pixels'", r"\(8, 8, 3\)"), _FLOAT_RAISES),
    _data_case("data=wrong rank", images(4, (8, 8)), ("'pixels'", r"\(8, 8, 3\)"), _FLOAT_RAISES),
    _data_case(
        "data=Dataset of the wrong shape",
        lambda: tf.data.Dataset.from_tensor_slices(images(4, (9, 9, 3))).batch(2),
        ("'pixels'",),
        _FLOAT_RAISES,
    ),
    _data_case(
        "data=strings", np.full((4, 8, 8, 3), "a"), ("'pixels'", "dtype"), "raises a builtin TypeError"
    ),
    _data_case(
        "data=complex",
        images().astype(np.complex64),
        ("'pixels'", "complex"),
        "casts complex data to float, dropping the imaginary part (a ComplexWarning only)",
        today="silent",
    ),
    _data_case("data=empty array", images(0), ("no samples",), _FLOAT_RAISES),
    _data_case("data=empty list", [], ("no samples",), _FLOAT_RAISES),
    _data_case("data=empty generator", lambda: lambda: iter([]), ("no samples",), _FLOAT_RAISES),
    _data_case(
        "data=empty Dataset",
        lambda: tf.data.Dataset.from_tensor_slices(images(0)).batch(4),
        ("no samples",),
        _FLOAT_RAISES,
    ),
    _data_case("data=None", None, ("representative data", "NoneType"), "raises a builtin TypeError"),
    _data_case("data='data.npz'", "data.npz", ("representative data", "str"), "raises a builtin TypeError"),
    _data_case("data=2 arrays for 1 input", [images(), images()], ("2 arrays", "'pixels'"), _FLOAT_RAISES),
    _data_case(
        "data=1 array for 2 inputs",
        np.zeros((4, 4), "float32"),
        ("1 arrays", "'left', 'right'"),
        _FLOAT_RAISES,
        model=two_input_model,
    ),
    _data_case(
        "data=3 arrays for 2 inputs",
        [np.zeros((4, 4), "float32")] * 3,
        ("3 arrays",),
        _FLOAT_RAISES,
        model=two_input_model,
    ),
    _data_case(
        "data=dict with unknown keys",
        lambda: lambda: iter([{"x": np.zeros((4, 4), "float32")}]),
        ("'x'", "'left', 'right'"),
        _FLOAT_RAISES + " naming the keys but not saying what to do",
        model=two_input_model,
        today="unclear",
    ),
    _data_case(
        "data=inputs with different batch sizes",
        [np.zeros((4, 4), "float32"), np.zeros((3, 4), "float32")],
        (r"batch sizes \[4, 3\]",),
        _FLOAT_RAISES + " naming the batch sizes but not saying what to do",
        model=two_input_model,
        today="unclear",
    ),
    _data_case("data=NaN", np.full((4, 8, 8, 3), np.nan, "float32"), ("'pixels'", "NaN"), _FLOAT_RAISES),
    _data_case("data=inf", np.full((4, 8, 8, 3), np.inf, "float32"), ("'pixels'", "Inf"), _FLOAT_RAISES),
]


@pytest.mark.parametrize("case", params(MODELS))
def test_bad_model(case):
    assert isinstance(check(case), (ModelError, UnsupportedModelError, kerasq.errors.ConfigError))


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
@pytest.mark.parametrize("case", params(DATA_CASES))
def test_bad_data(case):
    assert isinstance(check(case), DataError)


def test_hessian_service_names_the_batch():
    """The Hessian service (mixed precision, HMSE, GPTQ) refuses batches that do not fit the model itself."""
    from kerasq.hessian import activation_hessian_scores

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3)(inputs)
    model = keras.Model(inputs, [hidden, keras.layers.Dense(2)(hidden)])
    batch = np.ones((2, 4), "float32")
    with pytest.raises(DataError, match="batch 0 has 2 arrays but the model has 1 inputs"):
        activation_hessian_scores(model, 1, [[batch, batch]])
    with pytest.raises(DataError, match="batch 0 contains non-finite values"):
        activation_hessian_scores(model, 1, [np.full((2, 4), np.nan, "float32")])
    with pytest.raises(DataError, match="no batches"):
        activation_hessian_scores(model, 1, [])
    with pytest.raises(kerasq.errors.ConfigError, match="granularity"):
        activation_hessian_scores(model, 1, [batch], granularity="layer")
    with pytest.raises(kerasq.errors.ConfigError, match="n_interest"):
        activation_hessian_scores(model, 2, [batch])
