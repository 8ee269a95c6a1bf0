"""Three small architectures end to end on the tflite platform: PTQ, INT8 export, LiteRT.

Each file must hold no float tensor and pick the same top-1 class as the Keras quantized model on real CIFAR
images. The architectures cover what the applications zoo needs: squeeze-and-excite with hard-swish (and an
input Rescaling), concatenations of concatenations (Inception / DenseNet, with a nested Sequential block), and
pre-activation residual blocks whose BatchNormalizations follow an Add or the input (ResNetV2).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import random_bn
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat
from kerasq.export.runtimes import float_tensors, predict_litert
from kerasq.export.tflite import convert_to_tflite


def mobilenet_v3() -> keras.Model:
    """keras.applications' MobileNetV3Small: Rescaling input, squeeze-and-excite, hard-swish."""
    return keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, alpha=0.75, classes=10, classifier_activation=None,
        dropout_rate=0.0,
    )  # fmt: skip


def _conv_bn_relu(x, filters: int, kernel: int, seed: int):
    return layers.ReLU()(random_bn(layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x), seed))


def inception_dense() -> keras.Model:
    """Inception-style branches concatenated, that concatenation inside another (InceptionV3's mixed blocks),
    a DenseNet-style growing concatenation, and a nested Sequential called on an inner tensor (ConvNeXt)."""
    keras.utils.set_random_seed(1)
    image = keras.Input((32, 32, 3))
    x = _conv_bn_relu(image, 16, 3, 1)
    x = layers.MaxPooling2D(2)(x)
    inner = layers.Concatenate()([_conv_bn_relu(x, 8, 1, 2), _conv_bn_relu(x, 8, 3, 3)])
    pool = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.Concatenate()([inner, _conv_bn_relu(pool, 8, 1, 4), _conv_bn_relu(x, 8, 5, 5)])
    x = keras.Sequential([layers.Conv2D(24, 2, strides=2), layers.BatchNormalization(), layers.ReLU()])(x)
    for i in range(3):  # dense block: every layer reads all earlier feature maps
        y = layers.Conv2D(8, 3, padding="same")(layers.ReLU()(random_bn(x, 10 + i)))
        x = layers.Concatenate()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(10)(x), name="inception_dense")


def preactivation_resnet() -> keras.Model:
    """ResNetV2 blocks: BN -> ReLU -> conv, identity and projection shortcuts, a BN after the last Add."""
    keras.utils.set_random_seed(2)
    image = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same")(image)
    for i, (filters, stride) in enumerate(((16, 1), (32, 2), (32, 1))):
        pre = layers.ReLU()(random_bn(x, 20 + i))
        y = layers.Conv2D(filters, 3, strides=stride, padding="same")(pre)
        y = layers.Conv2D(filters, 3, padding="same")(layers.ReLU()(random_bn(y, 30 + i)))
        shortcut = (
            x if stride == 1 and x.shape[-1] == filters else layers.Conv2D(filters, 1, strides=stride)(pre)
        )
        x = layers.Add()([shortcut, y])
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(random_bn(x, 40)))
    return keras.Model(image, layers.Dense(10)(x), name="preactivation_resnet")


@pytest.mark.parametrize("make", [mobilenet_v3, inception_dense, preactivation_resnet])
def test_architecture_exports_integer_and_agrees_with_keras(make, cifar):
    scale = 255.0 if make is mobilenet_v3 else 1.0  # MobileNetV3 rescales 0..255 itself
    calibration, held_out = cifar[0][:128] * scale, cifar[2][:500] * scale
    keras.utils.set_random_seed(0)
    tpc = kerasq.get_target_platform_capabilities("tflite")
    q_model, info = kerasq.ptq.keras_post_training_quantization(
        make(), calibration, target_platform_capabilities=tpc
    )
    assert info.float_layers == {}
    flatbuffer = convert_to_tflite(q_model, QuantizationFormat.INT8)
    assert float_tensors(flatbuffer) == []
    keras_out = q_model.predict(held_out, batch_size=250, verbose=0)
    litert_out = predict_litert(flatbuffer, held_out)
    agreement = np.mean(np.argmax(keras_out, -1) == np.argmax(litert_out, -1))
    assert agreement >= 0.99, f"top-1 agreement {agreement:.3f}"
