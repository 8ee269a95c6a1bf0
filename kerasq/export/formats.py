"""Export targets (names as MCT users know them)."""

from __future__ import annotations

from enum import Enum


class KerasExportSerializationFormat(Enum):
    """File format of an exported model."""

    KERAS = "keras"  # .keras archive; loads with keras.models.load_model after `import kerasq`
    SAVEDMODEL = "savedmodel"  # TensorFlow SavedModel directory; tf.saved_model.load / TF Serving
    TFLITE = "tflite"  # TensorFlow Lite / LiteRT flatbuffer


class QuantizationFormat(Enum):
    """How quantization is expressed in the exported model."""

    FAKELY_QUANT = "fakely_quant"  # float graph with quantize-dequantize ops
    INT8 = "int8"  # integer model: int8 weights and activations, int32 biases (TFLite only)
