"""INT8 TFLite export: the LiteRT model computes what the Keras quantized model computes (<= 1 output step)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from helpers import random_bn
from keras import layers

import kerasq
from kerasq.export import ExportError, QuantizationFormat
from kerasq.export.runtimes import float_tensors
from kerasq.export.sizes import packed_size, sub_byte_savings
from kerasq.export.tflite import convert_to_tflite
from kerasq.quantizers.wrapper import int8_storage_steps


def _bn(x):
    return random_bn(x, seed=x.shape[-1])


def residual_net() -> keras.Model:
    i = keras.Input((32, 32, 3))
    x = layers.ReLU()(_bn(layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(i)))
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    y = layers.Conv2D(16, 1)(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(32, 3, padding="same", activation="relu")(x))
    return keras.Model(i, layers.Dense(10)(x), name="residual")


def concat_pool_net() -> keras.Model:
    i = keras.Input((32, 32, 3))
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    b = layers.Conv2D(8, 5, padding="same")(i)
    x = layers.Concatenate()([a, b])
    x = layers.AveragePooling2D(2)(x)
    x = layers.SeparableConv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = layers.Flatten()(layers.AveragePooling2D(4)(x))
    model = keras.Model(i, layers.Dense(10)(x), name="concat_pool")  # logits: a softmax hides small errors
    _spread_channels(model)
    return model


def _spread_channels(model: keras.Model, seed: int = 0) -> None:
    """Scale every kernel's output channels by factors from 1/30 to 1 (shuffled), so each channel's scale
    differs and a kernel quantized with one scale for all its channels computes visibly different logits."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        for k, w in enumerate(weights):
            if w.ndim < 2:
                continue
            axis = 2 if isinstance(layer, layers.Conv2DTranspose) or w.shape[-1] == 1 else w.ndim - 1
            shape = [1] * w.ndim
            shape[axis] = w.shape[axis]
            weights[k] = w * rng.permutation(np.geomspace(1 / 30, 1, w.shape[axis])).reshape(shape)
        layer.set_weights(weights)


def sequence_net() -> keras.Model:
    i = keras.Input((32, 32, 3))
    x = layers.Reshape((32, 96))(i)
    x = layers.Conv1D(16, 3, padding="same", activation="relu")(x)
    x = layers.Dense(8, activation="tanh")(x)  # Dense on a 3-D input
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(i, layers.Dense(1, activation="sigmoid")(x), name="sequence")


def plain_net() -> keras.Model:
    """No adds and no concatenation: the imx500 platform's grids then map onto TFLite kernels one to one."""
    i = keras.Input((32, 32, 3))
    x = layers.ReLU()(_bn(layers.Conv2D(16, 3, padding="same", use_bias=False)(i)))
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(layers.Conv2D(8, 1, activation="relu")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(10)(x), name="plain")


def branch_concat_net() -> keras.Model:
    i = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(i)
    x = layers.Concatenate()(
        [layers.Conv2D(8, 1, activation="relu")(x), layers.Conv2D(8, 3, padding="same")(x)]
    )
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(10)(x), name="branch_concat")


def pool_branch_net() -> keras.Model:
    """Inception's pool branch: a max-pool output read by a conv and by a stride-1 average pool (TFLite rounds
    the means onto the input grid; with the max-pool output left without a quantizer the converter left the
    branch float)."""
    i = keras.Input((32, 32, 3))
    x = layers.MaxPooling2D(2)(layers.Conv2D(16, 3, padding="same", activation="relu")(i))
    pooled = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.Add()([layers.Conv2D(16, 1)(x), layers.Conv2D(16, 1)(pooled)])
    return keras.Model(i, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)), name="pool_branch")


def affine_net() -> keras.Model:
    """Standalone affines: Rescaling + per-channel Normalization at the input, a pre-activation BN, a BN after
    an Add, a per-channel Rescaling on a sequence and a BN on [batch, channels] (all 1x1 depthwise convs)."""
    i = keras.Input((32, 32, 3))
    x = layers.Rescaling(2.0, offset=-1.0)(i)
    x = layers.Normalization(mean=[0.1, -0.2, 0.05], variance=[0.3, 0.4, 0.5])(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same")(x)
    y = layers.Conv2D(16, 3, padding="same")(layers.ReLU()(_bn(x)))
    x = layers.ReLU()(_bn(layers.Add()([x, y])))
    x = layers.Reshape((16 * 16, 16))(layers.MaxPooling2D(1)(x))
    x = layers.Rescaling(np.linspace(0.5, 2.0, 16), offset=0.25)(x)
    x = layers.GlobalAveragePooling1D()(layers.Conv1D(8, 3, activation="relu")(x))
    x = _bn(layers.Dense(12, activation="relu")(x))
    return keras.Model(i, layers.Dense(10)(x), name="affine")


def _litert(flatbuffer: bytes, x: np.ndarray, resolver: OpResolverType = OpResolverType.AUTO) -> np.ndarray:
    interpreter = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=resolver)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _output_step(q_model: keras.Model) -> float:
    last = q_model.layers[-1]
    assert isinstance(last, kerasq.ActivationQuantizer), "the model output should be quantized"
    return float(last.scale.numpy())


def _quantize(
    model: keras.Model, calibration: np.ndarray, platform: object = "tflite", **qc: object
) -> keras.Model:
    """PTQ on ``platform`` (a name or a TargetPlatformCapabilities), QuantizationConfig fields from ``qc``."""
    tpc = kerasq.get_target_platform_capabilities(platform) if isinstance(platform, str) else platform
    core = kerasq.core.CoreConfig(kerasq.core.QuantizationConfig(**qc))
    return kerasq.ptq.keras_post_training_quantization(
        model, calibration, core_config=core, target_platform_capabilities=tpc
    )[0]


@pytest.fixture(scope="module")
def images(cifar):
    return cifar[0][:256], cifar[2][:200]


@pytest.mark.parametrize(
    ("builder", "platform"),
    [
        (residual_net, "tflite"),
        (concat_pool_net, "tflite"),
        (sequence_net, "tflite"),
        (plain_net, "tflite"),
        (branch_concat_net, "tflite"),
        (affine_net, "tflite"),
        (pool_branch_net, "tflite"),
        (plain_net, "imx500"),
    ],  # fmt: skip
)
def test_litert_matches_keras_within_one_step(builder, platform, images):
    calibration, test_images = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(builder(), calibration, platform)
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    diff = np.abs(_litert(flatbuffer, test_images) - q_model.predict(test_images, verbose=0))
    step = _output_step(q_model)
    assert diff.max() <= step * 1.0001, f"max diff {diff.max()} > one step {step}"
    assert np.mean(diff > step * 0.5) < 0.05  # almost every output is identical


def test_standalone_affines_export_as_integer_depthwise_convs(images):
    calibration, _ = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(affine_net(), calibration)
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    assert float_tensors(flatbuffer) == []
    ops = [op["op_name"] for op in Interpreter(model_content=flatbuffer)._get_ops_details()]
    assert ops.count("DEPTHWISE_CONV_2D") == 5  # input affine (one), two BNs, sequence Rescaling, 2-D BN
    assert ops.count("ADD") == 1 and not {"MUL", "SUB", "DIV"} & set(ops)  # the residual Add only


def test_tensors_are_integer(images):
    calibration, _ = images
    q_model, info = kerasq.ptq.keras_post_training_quantization(
        residual_net(),
        calibration,
        target_platform_capabilities=kerasq.get_target_platform_capabilities("tflite"),
    )
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8, integer_io=True)
    interpreter = Interpreter(model_content=flatbuffer)
    details = interpreter.get_tensor_details()
    dtypes = {d["dtype"] for d in details}
    assert np.float32 not in dtypes
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    kernels = [d for d in details if d["dtype"] == np.int8 and len(d["shape"]) == 4 and
               d["quantization_parameters"]["scales"].size > 1]  # fmt: skip
    assert len(kernels) >= 4  # per-channel conv / depthwise / dense-as-1x1 kernels
    biases = [
        d for d in details if d["dtype"] == np.int32 and d["quantization_parameters"]["scales"].size > 1
    ]
    assert biases
    # Activation grids are kerasq's: the model input tensor carries the input quantizer's scale.
    input_scale = interpreter.get_input_details()[0]["quantization"][0]
    assert input_scale == pytest.approx(info.inputs[q_model.inputs[0].name.split(":")[0]].scale[0], rel=1e-6)


def _int16_platform(signedness: str = "signed") -> kerasq.platform.TargetPlatformCapabilities:
    from dataclasses import replace

    from kerasq.core import QuantizationMethod
    from kerasq.platform import OperatorSet, OpQuantizationConfig, TargetPlatformCapabilities

    cfg = OpQuantizationConfig(activation_method=QuantizationMethod.SYMMETRIC, activation_n_bits=16,
                               signedness=signedness)  # fmt: skip
    preserving = replace(cfg, quantization_preserving=True)
    return TargetPlatformCapabilities(
        "int16x8", cfg, (OperatorSet("pool", ("max_pool", "reshape", "flatten"), preserving),)
    )


@pytest.mark.parametrize("builder", [plain_net, residual_net])
def test_int16x8_export_is_integer_and_close_to_keras(builder, images):
    calibration, test_images = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(builder(), calibration, _int16_platform())
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    interpreter = Interpreter(model_content=flatbuffer)
    edges = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    types = {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details() if d["index"] not in edges}
    assert (
        {"int16", "int8", "int64"} <= types <= {"int16", "int8", "int64", "int32"}
    )  # int32: shape constants
    diff = np.abs(_litert(flatbuffer, test_images) - q_model.predict(test_images, verbose=0))
    # 16-bit steps are 256 times finer than 8-bit ones; LiteRT's requantization rounding differences travel
    # through the network and cost a few of them (measured: 5 on plain_net, 2 on residual_net).
    assert diff.max() <= 8 * _output_step(q_model) * 1.0001, (
        f"max diff {diff.max() / _output_step(q_model):.1f}"
    )


@pytest.mark.parametrize(
    ("builder", "message"), [(branch_concat_net, "concatenation"), (sequence_net, "LOGISTIC")]
)
def test_int16x8_ops_litert_cannot_take_are_refused(builder, message, images):
    q_model = _quantize(builder(), images[0], _int16_platform())
    with pytest.raises(ExportError, match=message):
        convert_to_tflite(q_model, QuantizationFormat.INT8)


def test_unsigned_16_bit_and_mixed_widths_are_refused_naming_the_layers(images):
    from dataclasses import replace

    from kerasq.platform import OperatorSet

    calibration, _ = images
    unsigned = _quantize(plain_net(), calibration, _int16_platform("unsigned"))
    with pytest.raises(ExportError, match=r"int16x8 scheme needs signed symmetric.*activation_quantizer"):
        convert_to_tflite(unsigned, QuantizationFormat.INT8)
    wide = _int16_platform()
    narrow_relu = OperatorSet("relu8", ("relu",), replace(wide.default_config, activation_n_bits=8))
    mixed = _quantize(
        plain_net(), calibration, replace(wide, operator_sets=(*wide.operator_sets, narrow_relu))
    )
    with pytest.raises(ExportError, match=r"at most 8 bits everywhere.*activation_quantizer \(16-bit\)"):
        convert_to_tflite(mixed, QuantizationFormat.INT8)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("platform", ["tflite", "imx500"])
def test_sub_8_bit_activations_are_exact_inside_int8(bits, platform, images):
    """A 4- or 2-bit activation grid is stored in int8 with its own scale and clipped to its levels by a
    MINIMUM / MAXIMUM pair on that scale, so LiteRT computes what the Keras model computes."""
    calibration, test_images = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(residual_net(), calibration, platform, activation_n_bits=bits)
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    interpreter = Interpreter(model_content=flatbuffer)
    assert not [d for d in interpreter.get_tensor_details() if d["dtype"] == np.float32][2:]  # only the edges
    litert, keras_out = _litert(flatbuffer, test_images), q_model.predict(test_images, verbose=0)
    step = _output_step(q_model)
    assert np.all(np.abs(np.round(litert / step) * step - litert) < 1e-3 * step)  # on the narrow output grid
    assert np.abs(litert - keras_out).max() <= step * 1.0001


def test_4_bit_weights_stay_on_their_grid_inside_int8(images):
    calibration, test_images = images
    keras.utils.set_random_seed(0)  # unseeded, some initializations end two output steps off (1 in 10 seeds)
    q_model = _quantize(plain_net(), calibration, weights_n_bits=4)
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    interpreter = Interpreter(model_content=flatbuffer)
    kernels = [d for d in interpreter.get_tensor_details()
               if d["dtype"] == np.int8 and d["quantization_parameters"]["scales"].size > 1]  # fmt: skip
    assert kernels
    for d in kernels:
        values = interpreter.get_tensor(d["index"]).astype(np.int64)
        # the 4-bit grid [-8, 7] stored in int8 at a 15 times finer scale (so is the int32 bias): multiples of 15
        assert np.all(values % 15 == 0) and values.min() >= -120 and values.max() <= 105
    diff = np.abs(_litert(flatbuffer, test_images) - q_model.predict(test_images, verbose=0))
    assert diff.max() <= _output_step(q_model) * 1.0001
    kernels_4bit = [
        int(np.prod(w.layer.kernel.shape)) for w in q_model.layers if isinstance(w, kerasq.QuantizeWrapper)
    ]
    assert sub_byte_savings(q_model) == sum(n - -(-n // 2) for n in kernels_4bit)  # two 4-bit values per byte
    assert packed_size(q_model, len(flatbuffer)) == len(flatbuffer) - sub_byte_savings(q_model)


@pytest.mark.parametrize("builder", [residual_net, sequence_net, branch_concat_net])
def test_int4_weights_halve_4_bit_kernels_and_compute_the_same(builder, images):
    calibration, test_images = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(builder(), calibration, weights_n_bits=4)
    int8 = convert_to_tflite(q_model, QuantizationFormat.INT8)
    int4 = convert_to_tflite(q_model, QuantizationFormat.INT8, int4_weights=True)
    held = sum(
        int(np.prod(w.layer.kernel.shape)) for w in q_model.layers if isinstance(w, kerasq.QuantizeWrapper)
    )
    assert held > 0
    saved = len(int8) - len(int4)
    assert abs(saved - held // 2) <= 256, (saved, held)  # two values per byte, give or take padding
    step = _output_step(q_model)
    keras_out = q_model.predict(test_images, verbose=0)
    for flatbuffer in (int8, int4):  # LiteRT's int4 kernels may round differently, within one step
        assert np.abs(_litert(flatbuffer, test_images) - keras_out).max() <= step * 1.0001


def _file_kernel(interpreter: Interpreter, wrapper: kerasq.QuantizeWrapper) -> tuple[np.ndarray, np.ndarray]:
    """(integer kernel in the Keras layout, per-channel scales) of the one per-channel tensor of the file with
    the shape TFLite gives ``wrapper``'s kernel: [out, kh, kw, in] (dense: a 1x1 convolution), depthwise
    [1, kh, kw, in * multiplier]."""
    shape = tuple(wrapper.layer.kernel.shape)
    if wrapper.kind == "depthwise_conv":
        file_shape = (1, *shape[:2], shape[2] * shape[3])
    else:
        file_shape = (shape[-1], *((1, 1) if wrapper.kind == "dense" else shape[:2]), shape[-2])
    found = [d for d in interpreter.get_tensor_details() if tuple(d["shape"]) == file_shape
             and d["quantization_parameters"]["scales"].size > 1]  # fmt: skip
    assert len(found) == 1, (wrapper.layer.name, file_shape, [d["name"] for d in found])
    values = interpreter.get_tensor(found[0]["index"]).astype(np.int64)
    if wrapper.kind != "depthwise_conv":
        values = np.moveaxis(values, 0, -1)
    return values.reshape(shape), found[0]["quantization_parameters"]["scales"]


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_full_range_kernels_are_stored_exactly(bits, images):
    """A b-bit kernel (b < 8) uses all 2**b levels, the most negative one included, and the file holds it
    exactly: as int4 (LiteRT's int4 tensors hold -8) the same integers and scales as the Keras kernel; as int8
    at the finest scale that holds them (``int8_storage_steps``: 15 at 4 bits, 63 at 2), so the int32 bias
    is as fine as the Keras model assumes. The int8 file follows Keras within an output step; the int4 file,
    whose biases sit on the coarser grid, says so in its report."""
    calibration, test_images = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(plain_net(), calibration, weights_n_bits=bits)
    wrappers = [w for w in q_model.layers if isinstance(w, kerasq.QuantizeWrapper)]
    files, outputs = {}, {}
    for int4 in (False, True):
        files[int4] = convert_to_tflite(q_model, QuantizationFormat.INT8, int4_weights=int4)
        interpreter = Interpreter(model_content=files[int4])
        for w in wrappers:
            scale, _ = w.kernel_grid("kernel")
            levels = np.round(np.asarray(w.quantized_kernels()["kernel"]) / scale).astype(np.int64)
            assert levels.min() == -(2 ** (bits - 1)) and levels.max() <= 2 ** (bits - 1) - 1, w.layer.name
            steps = 1 if int4 else int8_storage_steps(bits, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            values, scales = _file_kernel(interpreter, w)
            np.testing.assert_array_equal(values, levels * steps, err_msg=f"{w.layer.name} int4={int4}")
            np.testing.assert_allclose(scales * steps, np.asarray(scale, np.float32).reshape(-1), rtol=1e-6)
        outputs[int4] = _litert(files[int4], test_images, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    assert {15: 4, 63: 2}[int8_storage_steps(bits, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)] == bits
    held = sum(int(np.prod(w.layer.kernel.shape)) for w in wrappers)
    assert len(files[False]) - len(files[True]) >= held // 2 - 256  # every kernel went to int4
    step = _output_step(q_model)
    keras_out = q_model.predict(test_images, verbose=0)
    assert np.abs(outputs[False] - keras_out).max() <= step * 1.0001


def test_int4_weights_with_a_transposed_convolution_are_refused_by_name(images):
    q_model = _quantize(concat_pool_net(), images[0], weights_n_bits=4)
    with pytest.raises(ExportError, match="conv2d_transpose.*without int4_weights"):
        convert_to_tflite(q_model, QuantizationFormat.INT8, int4_weights=True)


def test_trained_network_end_to_end_agreement(trained_cnn, cifar):
    """Per op, LiteRT matches within one step (tests above). Through a trained network, LiteRT's fixed-point
    requantization rounds a few near-tie values the other way (0.02% after the first conv), and the one-step
    differences travel downstream; where an output grid is finer than its input's (swish, softmax after
    logits with a 0.09 step), one input step becomes several output steps. Measured on this network: about 11%
    of the logits and 12% of the softmax outputs differ by more than one step (mean 0.6 steps, max 19), and the
    top-1 decisions agree on at least 98% of the images."""
    q_model = _quantize(trained_cnn, cifar[0][:256])
    x = cifar[2][:1000]
    litert = _litert(convert_to_tflite(q_model, QuantizationFormat.INT8), x)
    keras_out = q_model.predict(x, verbose=0)
    steps = np.abs(litert - keras_out) / _output_step(q_model)
    assert np.mean(steps <= 1.0001) >= 0.85
    assert np.mean(steps) < 1.0
    assert np.mean(np.argmax(litert, -1) == np.argmax(keras_out, -1)) >= 0.98


@pytest.mark.parametrize("builder", [plain_net, residual_net, sequence_net])
def test_kernels_too_large_for_the_converter_are_converted_in_parts(builder, images, monkeypatch):
    """TF 2.21's converter leaves a fake-quantized constant of 2**25 elements or more in float; such kernels are
    converted in output-channel parts, concatenated. Forced here with a tiny limit."""
    from kerasq.export import int8_graph

    calibration, test_images = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(builder(), calibration)
    whole = convert_to_tflite(q_model, QuantizationFormat.INT8)
    monkeypatch.setattr(int8_graph, "_MAX_KERNEL_ELEMENTS", 100)
    parts = convert_to_tflite(q_model, QuantizationFormat.INT8)

    def convolutions(flatbuffer: bytes) -> int:
        ops = Interpreter(model_content=flatbuffer)._get_ops_details()
        return sum(op["op_name"] == "CONV_2D" for op in ops)

    assert convolutions(parts) > convolutions(whole)
    assert not [d for d in Interpreter(model_content=parts).get_tensor_details() if d["dtype"] == np.float32][
        2:
    ]
    diff = np.abs(_litert(parts, test_images) - q_model.predict(test_images, verbose=0))
    assert diff.max() <= _output_step(q_model) * 1.0001


def dilated_net() -> keras.Model:
    i = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, dilation_rate=2, padding="same", activation="relu")(i)
    x = layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", activation="relu")(x)
    return keras.Model(i, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)), name="dilated")


def transpose_relu_net() -> keras.Model:
    i = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(i)
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = layers.ReLU()(x)  # TFLite does not fuse a relu into TRANSPOSE_CONV
    return keras.Model(i, layers.Conv2D(4, 1)(x), name="transpose_relu")


def dynamic_net() -> keras.Model:
    i = keras.Input((None, None, 3))
    x = layers.Conv2D(8, 3, activation="relu")(i)  # 'valid': a 1x1 placeholder input would not fit
    x = layers.Conv2D(8, 3)(x)
    return keras.Model(i, layers.GlobalAveragePooling2D()(x), name="dynamic")


@pytest.mark.parametrize("builder", [dilated_net, transpose_relu_net, dynamic_net])
@pytest.mark.parametrize("platform", ["tflite", "imx500"])
def test_dilated_transposed_and_dynamic_models_export(builder, platform, images):
    """Dilated convolutions (no SpaceToBatchND), a transposed conv before a relu TFLite does not fuse (stored
    on the relu's own grid: exact) and unknown input sizes (checked at a calibration sample's shape)."""
    from kerasq.export.tflite import convert

    calibration, test_images = images
    keras.utils.set_random_seed(0)
    q_model = _quantize(builder(), calibration, platform)
    conversion = convert(q_model, QuantizationFormat.INT8)
    interpreter = Interpreter(model_content=conversion.flatbuffer)
    assert not [d for d in interpreter.get_tensor_details() if d["dtype"] == np.float32][2:]
    if platform == "tflite":
        assert conversion.requantized == ()
    diff = np.abs(_litert(conversion.flatbuffer, test_images) - q_model.predict(test_images, verbose=0))
    assert diff.max() <= 2 * _output_step(q_model) * 1.0001  # measured: 1 step, 2 through a transposed conv


@pytest.mark.parametrize("platform", ["tflite", "imx500"])
def test_a_layer_applied_twice_exports_with_one_kernel(platform):
    inputs = keras.Input((16, 16, 8))
    conv = layers.Conv2D(8, 3, padding="same", activation="relu")
    x = conv(conv(inputs))
    model = keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 8)).astype("float32")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, data, target_platform_capabilities=kerasq.get_target_platform_capabilities(platform)
    )
    flatbuffer = convert_to_tflite(
        q_model, QuantizationFormat.INT8
    )  # was: "The name 'conv2d' is used 2 times"
    kernels = [d for d in Interpreter(model_content=flatbuffer).get_tensor_details()
               if d["dtype"] == np.int8 and len(d["shape"]) == 4 and tuple(d["shape"]) == (8, 3, 3, 8)]  # fmt: skip
    assert len(kernels) == 1  # the shared convolution's kernel is stored once
    np.testing.assert_allclose(_litert(flatbuffer, data[:8]), q_model.predict(data[:8], verbose=0),
                               atol=1.01 * _output_step(q_model))  # fmt: skip


def test_a_layer_kerasq_keeps_float_is_named_when_the_file_is_not_integer():
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.LayerNormalization(axis=1, name="block_norm")(x)  # over rows: kerasq keeps it in float
    model = keras.Model(inputs, layers.Conv2D(4, 1)(x))
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 4)).astype("float32")
    q_model = _quantize(model, data)
    with pytest.raises(ExportError, match=r"kerasq keeps 'block_norm' \(LayerNormalization\) in float"):
        convert_to_tflite(q_model, QuantizationFormat.INT8)


@pytest.mark.parametrize("sequence", [False, True])
def test_a_per_channel_affine_with_one_offset_exports_exactly(sequence):
    # Its per-channel kernel is exactly on the grid, so bias correction leaves the offset equal in every channel:
    # the converter stored that bias as one value quantized with channel 0's scale (7.5 dB) until the exporter
    # stopped passing it an all-equal constant.
    inputs = keras.Input((8, 8, 16))
    x = layers.ReLU()(inputs)
    if sequence:
        x = layers.Reshape((64, 16))(x)
    model = keras.Model(inputs, layers.Rescaling(np.linspace(0.5, 2.0, 16), offset=0.25)(x))
    data = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 16)).astype("float32")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, data, target_platform_capabilities=kerasq.get_target_platform_capabilities("tflite")
    )
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)  # passes the self-check
    keras_out, file_out = np.asarray(q_model(data[:8])), _litert(flatbuffer, data[:8])
    sqnr = 10 * np.log10(np.sum(keras_out**2) / max(np.sum((file_out - keras_out) ** 2), 1e-30))
    assert sqnr >= 60.0


def test_int4_storage_reports_the_coarser_bias_grid_and_int8_does_not(images):
    """Stored as int4, a 4-bit kernel keeps its own scale, so its int32 bias is 15 times coarser than the Keras
    model assumes (int8 storage): the report names every such layer; the int8 file has no such place."""
    from kerasq.export.tflite import convert

    keras.utils.set_random_seed(0)
    q_model = _quantize(plain_net(), images[0], weights_n_bits=4)
    with_bias = {
        w.layer.name
        for w in q_model.layers
        if isinstance(w, kerasq.QuantizeWrapper) and w.layer.bias is not None
    }
    assert with_bias
    int4 = convert(q_model, QuantizationFormat.INT8, int4_weights=True).requantized
    coarse = {r.tensor for r in int4 if "coarser grid" in r.reason}
    assert coarse == with_bias
    int8 = convert(q_model, QuantizationFormat.INT8).requantized
    assert not [r for r in int8 if "coarser grid" in r.reason]
