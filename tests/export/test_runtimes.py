"""predict_litert: inputs matched to a file's inputs by name, and data of the wrong shape refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasq.errors import DataError
from kerasq.export import keras_export_model
from kerasq.export.runtimes import litert_interpreter_module, predict, predict_litert


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """A float model whose .tflite file lists its inputs in another order than Keras (meta first)."""
    keras.utils.set_random_seed(0)
    image, meta = keras.Input((8, 8, 3), name="image"), keras.Input((4,), name="meta")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    model = keras.Model([image, meta], keras.layers.Dense(3)(keras.layers.Concatenate()([x, meta])))
    path = tmp_path_factory.mktemp("runtimes") / "two.tflite"
    flatbuffer = keras_export_model(model, path, "tflite").path.read_bytes()
    rng = np.random.default_rng(0)
    data = {
        "image": rng.normal(size=(5, 8, 8, 3)).astype("float32"),
        "meta": rng.normal(size=(5, 4)).astype("float32"),
    }
    return model, flatbuffer, data


def test_the_converter_reorders_the_inputs(two_inputs):
    from kerasq.export.runtimes import tflite_input_names

    _, flatbuffer, _ = two_inputs
    interpreter = litert_interpreter_module().Interpreter(model_content=flatbuffer)
    assert "meta" in interpreter.get_input_details()[0]["name"]  # the premise of the tests below
    assert tflite_input_names(flatbuffer) == ["meta", "image"]


def test_inputs_are_matched_by_name(two_inputs):
    model, flatbuffer, data = two_inputs
    expected = model.predict([data["image"], data["meta"]], verbose=0)
    np.testing.assert_allclose(predict_litert(flatbuffer, data, batch_size=2), expected, atol=1e-5)
    in_keras_order = [data["image"], data["meta"]]
    names = [t.name for t in model.inputs]
    np.testing.assert_allclose(
        predict_litert(flatbuffer, in_keras_order, input_names=names), expected, atol=1e-5
    )
    np.testing.assert_allclose(predict(flatbuffer, data), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        ("list", {}, r"2 inputs \('meta', 'image'\).*dict keyed by input name"),
        ("array", {}, r"2 inputs \('meta', 'image'\)"),
        ("renamed", {}, r"no input named 'pixels'.*'meta', 'image'"),
        ("list", {"input_names": ["image", "pixels"]}, r"no input named 'pixels'"),
        ("short", {}, r"'meta' has 4 samples.*'image' has 5"),
    ],
)
def test_inputs_that_cannot_be_matched(two_inputs, x, kwargs, match):
    _, flatbuffer, data = two_inputs
    given = {
        "list": [data["image"], data["meta"]],
        "array": data["image"],
        "renamed": {"pixels": data["image"], "meta": data["meta"]},
        "short": {"image": data["image"], "meta": data["meta"][:4]},
    }[x]
    with pytest.raises(DataError, match=match):
        predict_litert(flatbuffer, given, **kwargs)


def test_samples_of_another_shape_are_refused(two_inputs):
    _, flatbuffer, data = two_inputs
    small = {"image": np.zeros((2, 7, 7, 3), "float32"), "meta": data["meta"][:2]}
    with pytest.raises(DataError, match=r"'image'.*\(7, 7, 3\).*\(8, 8, 3\)"):
        predict_litert(flatbuffer, small)
