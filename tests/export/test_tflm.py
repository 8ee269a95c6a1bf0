"""TensorFlow Lite Micro runs kerasq's INT8 files as LiteRT does; its arena against the file's live tensors.

Per op kind, a small model exported through the ``tflite`` platform runs on both runtimes. TFLM's kernels are
ports of LiteRT's reference kernels, and the two agree bit for bit on every kind. LiteRT's default kernels
(XNNPACK and the optimized builtins) requantize with different rounding, so they differ from TFLM by one step on
a fraction of a percent of the outputs, two after MUL / TANH / HARD_SWISH / LEAKY_RELU (measured on 200
samples; ``STEPS_FROM_LITERT`` holds the bounds).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat, child_process
from kerasq.export import runtimes as rt
from kerasq.export import tflm as tflm_module
from kerasq.export.tflite import convert_to_tflite

pytest.importorskip("tflite_micro")

SIZE = 16  # CIFAR images cropped to 16x16: the kernels are the same, TFLM's reference kernels run faster


def _conv(x, channels=8, kernel=3, activation=None):
    return layers.Conv2D(channels, kernel, padding="same", activation=activation)(x)


def _image_model(body):
    i = keras.Input((SIZE, SIZE, 3))
    return keras.Model(i, body(i))


def _activation(name):
    return lambda: _image_model(lambda i: layers.Activation(name)(_conv(i)))


def _conv1d():
    i = keras.Input((64, 8))
    return keras.Model(i, layers.Conv1D(16, 3, padding="same", activation="relu")(i))


# kind: (builder, the TFLite op the kind becomes, max |TFLM - LiteRT default| in output steps)
OP_KINDS = {
    "conv2d_relu": (lambda: _image_model(lambda i: _conv(i, activation="relu")), "CONV_2D", 1),
    "depthwise": (lambda: _image_model(lambda i: layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(
        _conv(i))), "DEPTHWISE_CONV_2D", 1),
    # kerasq writes Dense as a 1x1 CONV_2D (after a RESHAPE here)
    "dense": (lambda: _image_model(lambda i: layers.Dense(16)(layers.Flatten()(_conv(i, 4)))), "CONV_2D", 1),
    # Dense on a feature map / a sequence (ConvNeXt's pointwise layers): the declared shapes must hold every
    # position, TFLM plans its arena from them
    "dense_on_feature_map": (lambda: _image_model(lambda i: layers.Dense(16)(_conv(i))), "CONV_2D", 1),
    "dense_on_sequence": (lambda: _image_model(lambda i: layers.Dense(16)(layers.Reshape((SIZE * SIZE, 8))(
        _conv(i)))), "CONV_2D", 1),
    "add": (lambda: _image_model(lambda i: layers.Add()([_conv(i), _conv(i, kernel=1)])), "ADD", 1),
    "multiply": (lambda: _image_model(lambda i: layers.Multiply()([_conv(i), _conv(i, kernel=1)])), "MUL", 2),
    "concat": (lambda: _image_model(lambda i: layers.Concatenate()([_conv(i), _conv(i, 4, kernel=1)])),
               "CONCATENATION", 1),
    "average_pool": (lambda: _image_model(lambda i: layers.AveragePooling2D(2)(_conv(i))), "AVERAGE_POOL_2D", 1),
    "max_pool": (lambda: _image_model(lambda i: layers.MaxPooling2D(2)(_conv(i))), "MAX_POOL_2D", 1),
    "global_average_pool": (lambda: _image_model(lambda i: layers.GlobalAveragePooling2D()(_conv(i, 16))),
                            "MEAN", 1),
    "softmax": (lambda: _image_model(lambda i: layers.Dense(10, activation="softmax")(
        layers.GlobalAveragePooling2D()(_conv(i, 16)))), "SOFTMAX", 1),
    "sigmoid": (_activation("sigmoid"), "LOGISTIC", 1),
    "tanh": (_activation("tanh"), "TANH", 2),
    "hard_swish": (_activation("hard_swish"), "HARD_SWISH", 2),
    "leaky_relu": (lambda: _image_model(lambda i: layers.LeakyReLU(0.1)(_conv(i))), "LEAKY_RELU", 2),
    "conv1d": (_conv1d, "CONV_2D", 1),  # EXPAND_DIMS, CONV_2D, RESHAPE
    "transposed_conv": (lambda: _image_model(lambda i: layers.Conv2DTranspose(8, 3, strides=2, padding="same")(
        _conv(i))), "TRANSPOSE_CONV", 1),
    "reshape_flatten": (lambda: _image_model(lambda i: layers.Reshape((64, 32))(layers.Flatten()(_conv(i)))),
                        "RESHAPE", 1),
}  # fmt: skip


def _ops(flatbuffer: bytes) -> set[str]:
    interpreter = rt.litert_interpreter_module().Interpreter(model_content=flatbuffer)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def _output_scale(flatbuffer: bytes) -> float:
    interpreter = rt.litert_interpreter_module().Interpreter(model_content=flatbuffer)
    return float(interpreter.get_output_details()[0]["quantization"][0])


@pytest.fixture(scope="module")
def data(cifar):
    """(calibration, test) samples for an input shape: CIFAR crops for images, normal noise otherwise."""
    x_train, _, x_test, _ = cifar
    crop = slice(8, 8 + SIZE)

    def get(shape):
        if shape == (SIZE, SIZE, 3):
            return x_train[:64, crop, crop], x_test[:32, crop, crop]
        rng = np.random.default_rng(0)
        return rng.normal(0, 1, (64, *shape)).astype("float32"), rng.normal(0, 1, (32, *shape)).astype(
            "float32"
        )

    return get


@pytest.fixture(scope="module")
def exported(data):
    """kind -> (flatbuffer with int8 edges, flatbuffer with float edges, test samples, kerasq's PTQ info)."""
    cache = {}
    tpc = kerasq.get_target_platform_capabilities("tflite")

    def get(kind):
        if kind not in cache:
            keras.utils.set_random_seed(0)
            model = OP_KINDS[kind][0]()
            calibration, test = data(tuple(model.inputs[0].shape[1:]))
            q_model, info = kerasq.ptq.keras_post_training_quantization(
                model, calibration, target_platform_capabilities=tpc
            )
            cache[kind] = (
                convert_to_tflite(q_model, QuantizationFormat.INT8, integer_io=True),
                convert_to_tflite(q_model, QuantizationFormat.INT8),
                test,
                info,
            )
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", list(OP_KINDS))
def test_tflm_matches_litert_per_op_kind(kind, exported):
    flatbuffer, _, x, _ = exported(kind)
    assert OP_KINDS[kind][1] in _ops(flatbuffer)
    step = _output_scale(flatbuffer)
    tflm = rt.predict(flatbuffer, x, runtime="tflm")
    assert tflm.shape[0] == len(x) and len(np.unique(tflm)) >= 10  # a real output, not a saturated one
    reference = rt.predict_litert(flatbuffer, x, reference_kernels=True)
    np.testing.assert_array_equal(tflm, reference)  # bit-exact: the same kernels, ported
    steps = np.rint(np.abs(tflm - rt.predict(flatbuffer, x, runtime="litert")) / step)
    assert steps.max() <= OP_KINDS[kind][2], f"{kind}: {steps.max():.0f} steps from LiteRT"
    assert np.mean(steps > 0) < 0.06  # measured at most 4.9% of outputs (leaky_relu), mostly under 0.5%


def test_float_edges_quantize_and_dequantize_on_both_runtimes(exported):
    _, flatbuffer, x, _ = exported("softmax")  # QUANTIZE ... SOFTMAX, DEQUANTIZE in the file
    assert {"QUANTIZE", "DEQUANTIZE"} <= _ops(flatbuffer)
    tflm = rt.predict_tflm(flatbuffer, x)
    np.testing.assert_array_equal(tflm, rt.predict_litert(flatbuffer, x, reference_kernels=True))
    np.testing.assert_allclose(tflm.sum(-1), 1.0, atol=0.05)


def _int16_platform() -> kerasq.platform.TargetPlatformCapabilities:
    from kerasq.core import QuantizationMethod
    from kerasq.platform import OpQuantizationConfig, TargetPlatformCapabilities

    config = OpQuantizationConfig(
        activation_method=QuantizationMethod.SYMMETRIC, activation_n_bits=16, signedness="signed"
    )
    return TargetPlatformCapabilities("int16x8", config, ())


def test_int16_edges(data):
    keras.utils.set_random_seed(0)
    calibration, x = data((SIZE, SIZE, 3))
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        OP_KINDS["conv2d_relu"][0](), calibration, target_platform_capabilities=_int16_platform()
    )
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8, integer_io=True)
    details = rt.litert_interpreter_module().Interpreter(model_content=flatbuffer).get_output_details()[0]
    assert details["dtype"] == np.int16
    tflm = rt.predict_tflm(flatbuffer, x)
    assert len(np.unique(tflm)) > 1000  # 16-bit outputs
    np.testing.assert_array_equal(tflm, rt.predict_litert(flatbuffer, x))  # measured: exact


def test_top1_of_a_trained_model_agrees(cifar):
    x_train, y_train, x_test, y_test = cifar
    keras.utils.set_random_seed(0)
    i = keras.Input((32, 32, 3))
    x = layers.MaxPooling2D(2)(layers.Conv2D(16, 3, padding="same", activation="relu")(i))
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(layers.Conv2D(32, 1, activation="relu")(x))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(32, 3, padding="same", activation="relu")(x))
    model = keras.Model(i, layers.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train[:4000], y_train[:4000], batch_size=64, epochs=3, verbose=0)
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, x_train[:128], target_platform_capabilities=kerasq.get_target_platform_capabilities("tflite")
    )
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    x, y = x_test[:300], y_test[:300]
    tflm, litert = rt.predict(flatbuffer, x, "tflm"), rt.predict(flatbuffer, x, "litert")
    agree = np.mean(tflm.argmax(-1) == litert.argmax(-1))
    print(f"top-1 agreement {agree:.4f}, TFLM accuracy {np.mean(tflm.argmax(-1) == y):.4f}")
    assert agree >= 0.99, agree
    assert np.mean(tflm.argmax(-1) == y) > 0.2  # trained a little (measured 0.26; chance is 0.10)
    np.testing.assert_array_equal(tflm, rt.predict_litert(flatbuffer, x, reference_kernels=True))


# ---- the arena and the file's live tensors


@pytest.mark.parametrize("kind", ["conv2d_relu", "depthwise", "softmax", "transposed_conv"])
def test_arena_bytes_are_the_arena_tflm_needs(kind, exported):
    for flatbuffer in exported(kind)[:2]:
        arena = rt.tflm_arena(flatbuffer)
        assert rt.tflm_arena_bytes(flatbuffer) == arena.total == arena.head + arena.tail
        x = exported(kind)[2][:4]
        # an arena of exactly that size runs the model; one alignment unit (16 bytes) less does not
        np.testing.assert_array_equal(rt.predict_tflm(flatbuffer, x, arena_size=arena.total), rt.predict_tflm(
            flatbuffer, x))  # fmt: skip
        with pytest.raises(rt.TFLMError, match="arena is too small"):
            rt.predict_tflm(flatbuffer, x, arena_size=arena.total - 16)
        # the planned part of the arena holds the live tensors: at least the file's peak
        assert arena.head >= rt.peak_live_tensor_bytes(flatbuffer)


def test_the_default_arena_grows_until_the_model_fits(exported, monkeypatch):
    flatbuffer, _, x, _ = exported("transposed_conv")
    expected, arena = rt.predict_tflm(flatbuffer, x[:2]), rt.tflm_arena(flatbuffer)
    monkeypatch.setattr(
        tflm_module, "_arena_guess", lambda model: 1024
    )  # far too small: TFLM refuses, kerasq retries
    np.testing.assert_array_equal(rt.predict_tflm(flatbuffer, x[:2]), expected)
    assert rt.tflm_arena(flatbuffer) == arena
    monkeypatch.setattr(tflm_module, "_MAX_ARENA", 2048)
    with pytest.raises(rt.TFLMError, match="arena is too small"):
        rt.predict_tflm(flatbuffer, x[:2])


def test_peak_live_tensor_bytes_by_hand(exported):
    flatbuffer, float_edges, _, info = exported("conv2d_relu")
    pixels = SIZE * SIZE
    # int8 edges: CONV_2D reads the 3-channel input and writes 8 channels
    assert rt.live_tensor_bytes_per_op(flatbuffer).tolist() == [pixels * (3 + 8)]
    # float edges: QUANTIZE (float32 in, int8 out), CONV_2D, DEQUANTIZE (int8 in, float32 out)
    assert rt.live_tensor_bytes_per_op(float_edges).tolist() == [
        pixels * 3 * (4 + 1), pixels * (3 + 8), pixels * 8 * (1 + 4)
    ]  # fmt: skip
    # TFLM plans exactly that for a chain; kerasq's estimate counts the same int8 tensors
    assert rt.tflm_arena(flatbuffer).head == pixels * 11 == info.resource_utilization.activation_memory
    assert rt.tflm_arena(float_edges).head == pixels * 40


def test_peak_live_tensor_bytes_of_a_branch(exported):
    flatbuffer, _, _, info = exported("add")
    pixels = SIZE * SIZE
    # conv a (input + a), conv b (input + a + b: the input is still read), add (a + b + sum)
    assert rt.live_tensor_bytes_per_op(flatbuffer).tolist() == [pixels * 11, pixels * 19, pixels * 24]
    assert rt.peak_live_tensor_bytes(flatbuffer) == info.resource_utilization.activation_memory


def test_model_inputs_are_live_from_the_start(data):
    calibration, _ = data((SIZE, SIZE, 3))
    i, side = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 8))
    model = keras.Model([i, side], layers.Add()([_conv(i), side]))
    side_data = np.random.default_rng(0).normal(0, 1, (len(calibration), SIZE, SIZE, 8)).astype("float32")
    q_model, info = kerasq.ptq.keras_post_training_quantization(
        model,
        [calibration, side_data],
        target_platform_capabilities=kerasq.get_target_platform_capabilities("tflite"),
    )
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8, integer_io=True)
    pixels = SIZE * SIZE
    # CONV_2D (image, side: not read yet but an input, conv), ADD (conv, side, sum)
    assert rt.live_tensor_bytes_per_op(flatbuffer).tolist() == [pixels * (3 + 8 + 8), pixels * 24]
    assert rt.tflm_arena(flatbuffer).head == pixels * 24 == info.resource_utilization.activation_memory


# ---- failures are kerasq errors, never crashes


def test_unknown_runtime(exported):
    with pytest.raises(ValueError, match="unknown runtime 'tvm'"):
        rt.predict(exported("conv2d_relu")[0], np.zeros((1, SIZE, SIZE, 3), np.float32), runtime="tvm")


def test_an_op_tflm_lacks_is_named():
    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def sign(x):
        return tf.math.sign(x)

    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions(
        [sign.get_concrete_function()], sign
    ).convert()
    with pytest.raises(rt.TFLMError, match="no kernel for the SIGN op"):
        rt.predict_tflm(flatbuffer, np.ones((2, 8), np.float32))
    with pytest.raises(rt.TFLMError, match="SIGN"):
        rt.tflm_arena_bytes(flatbuffer)


def test_wrong_sample_shape(exported):
    with pytest.raises(ValueError, match="the file's input is"):
        rt.predict_tflm(exported("conv2d_relu")[0], np.zeros((2, 8, 8, 3), np.float32))


def _edited(flatbuffer: bytes, edit) -> bytes:
    import flatbuffers

    schema = rt.litert_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    edit(model)
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _shrink_output(model):
    graph = model.subgraphs[0]
    graph.tensors[graph.outputs[0]].shape[-1] = 4  # TFLM would write 8 channels into a 4-channel buffer


def _drop_conv_options(model):
    conv = model.subgraphs[0].operators[0]
    conv.builtinOptionsType, conv.builtinOptions = 0, None  # TFLM would divide by a stride of 0


def _output_zero_point(model):
    graph = model.subgraphs[0]
    graph.tensors[graph.outputs[0]].quantization.zeroPoint[0] = 300  # outside int8


def _write_the_input(model):
    graph = model.subgraphs[0]
    graph.operators[0].outputs[0] = graph.inputs[0]  # the conv overwrites the model input


def _set(op_name, edit):
    """An edit applying ``edit(model, op)`` to each operator ``op_name`` of the main graph."""

    def apply(model):
        codes = rt.litert_schema().BuiltinOperator
        for op in model.subgraphs[0].operators:
            if model.operatorCodes[op.opcodeIndex].builtinCode == getattr(codes, op_name):
                edit(model, op)

    return apply


def _zero_beta(model, op):
    op.builtinOptions.beta = 0.0  # TFLM aborts computing the softmax's multiplier


def _depth_multiplier(model, op):
    op.builtinOptions.depthMultiplier = 10753  # TFLM loops over channels x multiplier; LiteRT ignores it


@pytest.mark.parametrize(
    ("kind", "corrupt", "message"),
    [
        ("conv2d_relu", lambda fb: fb[: len(fb) // 2], "does not parse"),
        ("conv2d_relu", lambda fb: b"\0" * 64, "no TFL3 file identifier"),
        ("conv2d_relu", lambda fb: _edited(fb, _shrink_output), "is declared"),
        ("conv2d_relu", lambda fb: _edited(fb, _drop_conv_options), "CONV_2D"),
        ("conv2d_relu", lambda fb: _edited(fb, _output_zero_point), "zero point outside int8"),
        ("conv2d_relu", lambda fb: _edited(fb, _write_the_input), "already written"),
        ("softmax", lambda fb: _edited(fb, _set("SOFTMAX", _zero_beta)), "beta = 0.0"),
        ("depthwise", lambda fb: _edited(fb, _set("DEPTHWISE_CONV_2D", _depth_multiplier)), "depth multiplier 10753"),
    ],
    ids=["truncated", "zeros", "wrong_shape", "no_conv_options", "zero_point", "dataflow", "softmax_beta",
         "depth_multiplier"],
)  # fmt: skip
def test_malformed_files_are_refused_before_tflm_reads_them(kind, corrupt, message, exported):
    bad = corrupt(exported(kind)[0])
    for call in (lambda: rt.predict_tflm(bad, np.zeros((1, SIZE, SIZE, 3), np.float32)),
                 lambda: rt.tflm_arena_bytes(bad), lambda: rt.peak_live_tensor_bytes(bad)):  # fmt: skip
        with pytest.raises(rt.InvalidTFLiteFileError, match=message):
            call()


@pytest.mark.skipif(not child_process.FORK, reason="crashes are caught in a forked child (Linux)")
def test_a_file_that_crashes_tflm_is_an_error_not_a_crash(exported):
    """SOFTMAX with beta 1e-8 passes every check, LiteRT runs it, TFLM aborts: caught in a child process."""
    bad = _edited(
        exported("softmax")[0], _set("SOFTMAX", lambda m, op: setattr(op.builtinOptions, "beta", 1e-8))
    )
    with pytest.raises(rt.TFLMError, match=r"crashed \(SIGABRT\)"):
        rt.predict_tflm(bad, np.zeros((1, SIZE, SIZE, 3), np.float32))
    with pytest.raises(rt.TFLMError, match="crashed"):
        rt.tflm_arena_bytes(bad)


@pytest.mark.skipif(not child_process.FORK, reason="crashes are caught in a forked child (Linux)")
def test_a_file_that_crashes_litert_is_refused(exported):
    """An ADD input with scale 2.4e8: LiteRT's check aborts on it, in a child process."""

    def huge_scale(model, op):
        model.subgraphs[0].tensors[op.inputs[0]].quantization.scale[0] = 2.4e8

    bad = _edited(exported("add")[0], _set("ADD", huge_scale))
    with pytest.raises(rt.InvalidTFLiteFileError, match="LiteRT crashed"):
        rt.predict_tflm(bad, np.zeros((1, SIZE, SIZE, 3), np.float32))


_FUZZ = textwrap.dedent(
    """
    import importlib.util, os, sys
    import numpy as np
    spec = importlib.util.spec_from_file_location("runtimes", sys.argv[1])
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    rt.tflm_runtime_module(), rt.litert_interpreter_module()
    flatbuffer, rng = open(sys.argv[2], "rb").read(), np.random.default_rng(0)
    x = np.zeros((1, *[int(d) for d in sys.argv[3].split(",")]), np.float32)
    outcomes = {"ran": 0, "refused": 0, "crashed": 0}
    for _ in range(int(sys.argv[4])):
        data = bytearray(flatbuffer)
        for _ in range(rng.integers(1, 5)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            try:
                rt.predict_tflm(bytes(data), x)
                os._exit(0)
            except (rt.InvalidTFLiteFileError, rt.TFLMError, ValueError):
                os._exit(1)
        status = os.waitpid(pid, 0)[1]
        key = "crashed" if os.WIFSIGNALED(status) else ["ran", "refused"][min(os.WEXITSTATUS(status), 1)]
        outcomes[key] += 1
    print(outcomes)
    """
)


@pytest.mark.skipif(not child_process.FORK, reason="forks a child per corrupted file (Linux)")
def test_corrupted_files_never_crash_the_process(exported, tmp_path):
    """Random byte edits of a real file: each runs, or is refused with a kerasq error; no child dies."""
    (tmp_path / "m.tflite").write_bytes(exported("conv2d_relu")[0])
    result = subprocess.run(
        [sys.executable, "-c", _FUZZ, rt.__file__, tmp_path / "m.tflite", f"{SIZE},{SIZE},3", "200"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert outcomes["crashed"] == 0, outcomes
    assert outcomes["ran"] > 30 and outcomes["refused"] > 30, outcomes  # both paths were exercised


def test_missing_tflite_micro_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # import tflite_micro raises ImportError
    with pytest.raises(rt.RuntimeUnavailableError, match=r"kerasq\[tflm\]") as err:
        rt.predict_tflm(b"", np.zeros((1, 2), np.float32))
    assert "tflite-micro" in str(err.value)
