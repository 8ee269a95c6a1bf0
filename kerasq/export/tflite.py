"""Convert a kerasq-quantized Keras model to a TFLite / LiteRT flatbuffer."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasq.export.compact_file import compact_flatbuffer
from kerasq.export.formats import QuantizationFormat
from kerasq.export.int8_graph import ExportError, ExportGraph, activation_width, export_graph
from kerasq.export.int16x8 import widen_int16_biases
from kerasq.export.report import Requantization
from kerasq.export.runtimes import float_tensors, litert_interpreter_module
from kerasq.export.verify import Verification, verify_file
from kerasq.export.weighted_twin import int4_kernel
from kerasq.graph import UnsupportedModelError
from kerasq.quantizers import ActivationQuantizer, QuantizeWrapper


def _converter(model: keras.Model, workdir: Path) -> tf.lite.TFLiteConverter:
    path = workdir / "saved_model"
    model.export(str(path), format="tf_saved_model", verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(str(path))


@dataclass(frozen=True)
class Conversion:
    """A converted flatbuffer and the places where it computes differently from the Keras model."""

    flatbuffer: bytes
    requantized: tuple[Requantization, ...]
    verification: Verification | None = None


def convert_to_tflite(
    q_model: keras.Model,
    quantization_format: QuantizationFormat,
    integer_io: bool = False,
    int4_weights: bool = False,
) -> bytes:
    """The flatbuffer of ``q_model`` (see ``convert``)."""
    return convert(q_model, quantization_format, integer_io, int4_weights).flatbuffer


def convert(
    q_model: keras.Model,
    quantization_format: QuantizationFormat,
    integer_io: bool = False,
    int4_weights: bool = False,
    verify: bool = True,
) -> Conversion:
    """Flatbuffer of ``q_model``, with the list of places it requantizes.

    FAKELY_QUANT: the float graph as is (quantize-dequantize arithmetic in float ops).
    INT8: int8 weights (per channel where kerasq chose it) and activations with kerasq's scales and zero
    points, int32 biases; inputs/outputs are float32 (quantized at the edges) or int8 with ``integer_io``.
    When every activation is 16-bit (signed, zero point 0) the file uses TFLite's int16x8 scheme instead:
    int16 activations, int8 weights, int64 biases (see ``int16x8`` for the bias repair), int16 ``integer_io``.
    Mixed activation widths are refused, naming the quantizers. Each distinct quantization vector is stored
    once, inner tensor names cut to their first op (``compact_file``).
    ``int4_weights``: kernels on grids of at most 4 bits are stored as LiteRT int4 tensors (two values per
    byte) instead of int8. This uses the converter's ``_experimental_low_bit_qat`` switch, the only way TF 2.21
    offers to emit int4 weights; the values are the same either way.
    ``verify``: run the file on the calibration samples the model keeps and refuse it when it does not follow
    the Keras model (``kerasq.export.verify``); the result is ``Conversion.verification``.
    """
    with tempfile.TemporaryDirectory(prefix="kerasq_tflite_") as tmp:
        if quantization_format is QuantizationFormat.FAKELY_QUANT:
            return Conversion(flatbuffer=_converter(q_model, Path(tmp)).convert(), requantized=())
        width, int4 = _integer_scheme(q_model, int4_weights)
        try:
            graph = export_graph(q_model, int4_weights)
        except UnsupportedModelError as err:
            raise ExportError(f"INT8 export of {q_model.name!r}: {err}") from err
        flatbuffer = _convert_integer(graph.model, Path(tmp), width, int4, integer_io)
    if width == 16:
        flatbuffer, _ = widen_int16_biases(flatbuffer)
    flatbuffer = compact_flatbuffer(flatbuffer)
    _check_integer_file(flatbuffer, graph, width, int4)
    verification = None
    if verify:
        suspects = graph.float_layers + [repr(r.tensor) for r in graph.requantized]
        verification = verify_file(flatbuffer, q_model, graph.references, suspects)
    return Conversion(flatbuffer=flatbuffer, requantized=tuple(graph.requantized), verification=verification)


def _integer_scheme(q_model: keras.Model, int4_weights: bool) -> tuple[int, bool]:
    """(activation width, int4 kernels): 8 or 16 (``activation_width``), and whether the file stores int4
    kernels (asked for, and some kernel qualifies); refuses models the integer file cannot hold."""
    _check_quantized(q_model)
    width = activation_width(q_model)
    int4 = int4_weights and bool(_int4_layers(q_model))  # asked for, and some kernel qualifies
    if int4:
        if width == 16:
            raise ExportError(
                "int4 weights apply to the int8 scheme only, not to int16x8 (16-bit activations)."
            )
        _check_int4_compatible(q_model)
    return width, int4


def _convert_integer(model: keras.Model, workdir: Path, width: int, int4: bool, integer_io: bool) -> bytes:
    """The converter's integer flatbuffer of the fake-quant graph ``model`` (``export_graph``), in the int8
    or int16x8 scheme by ``width``, with int4 kernels and integer inputs / outputs as asked."""
    converter = _converter(model, workdir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if width == 16:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    if int4:
        converter._experimental_low_bit_qat = True
    if integer_io:
        converter.inference_input_type = tf.int16 if width == 16 else tf.int8
        converter.inference_output_type = tf.int16 if width == 16 else tf.int8
    try:
        return converter.convert()
    except Exception as err:  # the converter raises its own ConverterError types
        raise ExportError(f"The TFLite converter rejected the quantized graph: {err}") from err


def _check_integer_file(flatbuffer: bytes, graph: ExportGraph, width: int, int4: bool) -> None:
    """``check_integer``, with the likely cause added when the file was converted in int4 (low-bit) mode."""
    try:
        check_integer(flatbuffer, graph, width)
    except ExportError as err:
        if not int4:
            raise
        raise ExportError(
            f"{err} In its int4 (low-bit) mode the TFLite converter does not find ranges for ops that have no "
            "quantizer of their own (such as the sigmoid inside swish); export without int4_weights."
        ) from err


def _check_quantized(model: keras.Model) -> None:
    """INT8 export needs a kerasq-quantized graph model (its grids are what the file stores)."""
    if not any(isinstance(layer, (ActivationQuantizer, QuantizeWrapper)) for layer in model.layers):
        raise ExportError(
            f"{model.name!r} has no kerasq quantizers, so there are no grids to export in INT8. Quantize it first "
            "(kerasq.ptq.keras_post_training_quantization), or export FAKELY_QUANT for a float TFLite file."
        )


def _int4_layers(q_model: keras.Model) -> list[str]:
    """Layers with at least one kernel LiteRT would hold as int4."""
    return [
        layer.name
        for layer in q_model.layers
        if isinstance(layer, QuantizeWrapper)
        and any(int4_kernel(layer.kind, spec) for spec in layer.kernel_quantizers.values())
    ]


def _check_int4_compatible(q_model: keras.Model) -> None:
    """The converter's low-bit mode cannot convert transposed convolutions at all (not even int8 ones)."""
    transposed = [
        layer.name
        for layer in q_model.layers
        if isinstance(layer, QuantizeWrapper) and layer.kind == "conv_transpose"
    ]
    if transposed:
        raise ExportError(
            f"int4 weights cannot be exported together with transposed convolutions ({', '.join(transposed)}): "
            "the TFLite converter's low-bit mode rejects TRANSPOSE_CONV. Export without int4_weights (4-bit "
            "kernels are then stored on their grid inside int8 tensors)."
        )


def _run_once(flatbuffer: bytes, sample_shapes: dict[str, tuple[int, ...]]) -> None:
    """Run the file once on zeros, at a calibration sample's shape where an input has unknown dimensions
    (inputs matched by name: the converter may reorder them)."""
    interpreter = litert_interpreter_module().Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner()
    feed = {}
    for name, detail in runner.get_input_details().items():
        shape = (
            [1, *sample_shapes[name]]
            if name in sample_shapes
            else [max(1, d) for d in detail["shape_signature"]]
        )
        feed[name] = np.zeros(shape, detail["dtype"])
    runner(**feed)


def _layers_of(tensor_names: list[str], model: keras.Model) -> list[str]:
    """The ``model`` layers the converter's tensor names come from (names look like ``model_1/layer_1/op``)."""
    found = []
    for layer in model.layers:
        if type(layer).__name__.startswith("TFFakeQuant"):  # the quantize step in front of a float op
            continue
        if any(f"/{layer.name}_1/" in t or f"/{layer.name}/" in t for t in tensor_names):
            found.append(f"{layer.name!r} ({type(layer).__name__})")
    return found


def _listed(names: list[str], limit: int = 6) -> str:
    """``names`` joined, the first ``limit`` of them and a count of the rest."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def check_integer(flatbuffer: bytes, graph: ExportGraph, width: int) -> None:
    """Raise unless LiteRT can run the model and every tensor inside it is an integer one."""
    name = graph.model.name
    try:  # kernels check their parameters when they first run
        _run_once(flatbuffer, graph.sample_shapes)
    except (RuntimeError, ValueError) as err:  # a kernel's own check, e.g. a fixed output scale it needs
        hint = (
            "The platform's grids do not meet this kernel's rules (int16x8: logistic and tanh need fixed output "
            "ranges); export FAKELY_QUANT instead."
            if width == 16
            else "Please report this model to kerasq; export FAKELY_QUANT meanwhile."
        )
        raise ExportError(f"LiteRT cannot run the converted {name!r}: {err}. {hint}") from err
    leftovers = float_tensors(flatbuffer)
    if leftovers and graph.float_layers:  # the likely cause: layers kerasq could not quantize
        raise ExportError(
            f"INT8 export of {name!r} left {len(leftovers)} float tensors: kerasq keeps "
            f"{_listed(graph.float_layers)} in float (no quantizer for that kind of layer, see the warnings of "
            "the quantization report), and TFLite's converter then computes them, and the quantized layers "
            "next to them, in float. Replace them with layers kerasq quantizes (Keras built-in layers or "
            "keras.ops calls), or export FAKELY_QUANT (float TFLite graph)."
        )
    if leftovers:
        layers = _layers_of(leftovers, graph.model) or [", ".join(leftovers[:4])]
        raise ExportError(
            f"INT8 export of {name!r} left {len(leftovers)} float tensors, in {', '.join(layers)}: TFLite's "
            "converter has no integer kernel for these operations as they are written. Replace them with "
            "operations TFLite runs in int8 (relu, relu6, leaky_relu, hard_swish, sigmoid, tanh, gelu, pooling, "
            "add, multiply, concatenate, reshape), or export FAKELY_QUANT (float TFLite graph)."
        )
