"""Check a converted file against the Keras quantized model, on the calibration samples the model keeps.

The TFLite converter rewrites the graph it gets (it folds constants, fuses ops, picks kernels), and a rewrite
that changes the arithmetic would otherwise reach the user as a file that silently computes something else.
Every quantizing export therefore runs the file in LiteRT on the few calibration samples the quantized model
keeps with its input quantizers (``ActivationQuantizer.reference_inputs``) and compares each output with the
Keras model's: ``verify_file`` refuses the file when the signal-to-noise ratio of the difference is below
``MIN_SQNR_DB``.

The bound: on the trained networks of kerasq's export tests (both platforms, requantized fused tensors
included) the file stays at 28 dB or more (most files are identical to Keras or above 40 dB); a float
``x * 2`` between quantized layers, which the converter folds into the next convolution's already-quantized
kernel, gives 9-10 dB. Untrained, randomly initialised networks amplify one-step rounding differences layer
after layer, so their files can fall below the bound without a fault: the Keras model itself is then as far
from the same network without rounding (``unrounded_twin``) as the file is. A file below ``MIN_SQNR_DB`` is
therefore refused only when the comparison can tell: the Keras model is itself within ``MIN_SQNR_DB`` of the
unrounded network, and the file is more than ``CLOSER_DB`` farther from it than Keras is. (The float ``x * 2``:
Keras 36.6 dB from the unrounded network, the file 9.0 dB: refused. EfficientNetV2B0 with random weights on
imx500: Keras 4.5 dB from its unrounded network on the 4 samples, the file 0.8 dB, and on 64 held-out images
3.7 and 3.1 dB: rounding noise dominates both, the check is inconclusive and says so.) ``verify=False`` skips
the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kerasq.data.representative import input_specs_from_model
from kerasq.errors import ExportError
from kerasq.export.runtime_imports import litert_interpreter_module
from kerasq.export.runtimes import from_file_dtype, to_file_dtype
from kerasq.graph import read_model
from kerasq.graph.model_graph import fresh_inputs, resolve_refs
from kerasq.quantizers import ActivationQuantizer, FusedTensorRange, QuantizeWrapper

MIN_SQNR_DB = 15.0
CLOSER_DB = 3.0  # a file below MIN_SQNR_DB passes if it is this close to the unrounded model as Keras is


@dataclass(frozen=True)
class Verification:
    """How closely the file follows the Keras quantized model on its reference samples.

    Attributes:
        samples: calibration samples compared (0: the model keeps none, nothing was checked).
        sqnr_db: signal-to-noise ratio of file vs Keras, in dB, of the worst output (inf: identical).
        max_abs_error: the largest absolute difference over every output value.
    """

    samples: int
    sqnr_db: float
    max_abs_error: float
    file_vs_float_db: float = float("nan")
    keras_vs_float_db: float = float("nan")
    skipped: str = ""  # why nothing was compared (samples == 0)

    @property
    def conclusive(self) -> bool:
        """The Keras model is close enough to its unrounded network for a difference to mean a fault."""
        return bool(self.keras_vs_float_db >= MIN_SQNR_DB)

    def summary(self) -> str:
        if not self.samples:
            return f"not checked against the Keras model: {self.skipped}"
        if self.sqnr_db < MIN_SQNR_DB and not self.conclusive:
            return (
                f"checked against the Keras model on {self.samples} calibration sample(s): inconclusive, the Keras "
                f"model is itself only {self.keras_vs_float_db:.1f} dB from the network without rounding (file "
                f"vs Keras {self.sqnr_db:.1f} dB, file vs unrounded {self.file_vs_float_db:.1f} dB)"
            )
        return (
            f"checked against the Keras model on {self.samples} calibration sample(s): SQNR {self.sqnr_db:.1f} dB, "
            f"largest difference {self.max_abs_error:.4g} (against the unrounded model: file "
            f"{self.file_vs_float_db:.1f} dB, Keras {self.keras_vs_float_db:.1f} dB)"
        )


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """10 log10(signal / noise) of ``other`` against ``reference`` (inf when they are equal)."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((reference - other) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def run_signature(flatbuffer: bytes, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The file's outputs (in the Keras model's output order) on float ``inputs`` keyed by model input name;
    integer inputs and outputs are (de)quantized with the file's own scale and zero point."""
    runner = litert_interpreter_module().Interpreter(model_content=flatbuffer).get_signature_runner()
    inputs_detail, outputs_detail = runner.get_input_details(), runner.get_output_details()
    results = runner(**{name: to_file_dtype(inputs[name], d) for name, d in inputs_detail.items()})
    # several outputs are output_0, output_1, ... (verify_file checks); a single one may have any name
    order = (
        list(results) if len(results) == 1 else sorted(results, key=lambda key: int(key.rsplit("_", 1)[-1]))
    )
    return [from_file_dtype(results[name], outputs_detail[name]) for name in order]


def compare(reference: list[np.ndarray], got: list[np.ndarray], samples: int) -> Verification:
    """Worst-output SQNR and largest difference of ``got`` against ``reference``."""
    if len(reference) != len(got):
        raise ExportError(f"the file has {len(got)} outputs where the Keras model has {len(reference)}.")
    ratios, errors = [], []
    for ref, out in zip(reference, got, strict=True):
        if ref.shape != out.shape:
            raise ExportError(f"a file output has shape {out.shape} where the Keras model's has {ref.shape}.")
        ratios.append(sqnr_db(ref, out))
        errors.append(float(np.max(np.abs(ref.astype(np.float64) - out))) if ref.size else 0.0)
    return Verification(samples=samples, sqnr_db=min(ratios), max_abs_error=max(errors))


def verify_file(
    flatbuffer: bytes,
    q_model: keras.Model,
    references: dict[str, np.ndarray],
    suspects: list[str],
) -> Verification:
    """Compare the file with ``q_model`` on ``references`` (model input name -> samples); ``ExportError``
    naming ``suspects`` (the layers the file is likeliest to compute differently) below ``MIN_SQNR_DB``."""
    names = [spec.name for spec in input_specs_from_model(q_model)]
    if not references or sorted(references) != sorted(names):
        return _skipped("it keeps no calibration samples (quantize it again with this kerasq version)")
    signature = litert_interpreter_module().Interpreter(model_content=flatbuffer).get_signature_runner()
    if sorted(signature.get_input_details()) != sorted(names):
        return _skipped("the file's input names differ from the model's")
    outputs = list(signature.get_output_details())
    if len(outputs) > 1 and sorted(outputs) != sorted(f"output_{i}" for i in range(len(outputs))):
        return _skipped("the file's outputs are named, so their order is not the model's")
    ordered = [references[name] for name in names]
    feed = ordered[0] if len(ordered) == 1 else ordered
    expected = [keras.ops.convert_to_numpy(e) for e in keras.tree.flatten(q_model(feed, training=False))]
    unrounded = [keras.ops.convert_to_numpy(e) for e in keras.tree.flatten(unrounded_twin(q_model)(feed))]
    got = run_signature(flatbuffer, references)
    result = compare(expected, got, len(ordered[0]))
    result = Verification(
        samples=result.samples, sqnr_db=result.sqnr_db, max_abs_error=result.max_abs_error,
        file_vs_float_db=compare(unrounded, got, result.samples).sqnr_db,
        keras_vs_float_db=compare(unrounded, expected, result.samples).sqnr_db,
    )  # fmt: skip
    if (
        result.sqnr_db < MIN_SQNR_DB
        and result.conclusive
        and result.file_vs_float_db < (result.keras_vs_float_db - CLOSER_DB)
    ):
        where = (
            f" Layers it computes differently or that kerasq keeps in float: {', '.join(suspects)}."
            if suspects
            else ""
        )
        raise ExportError(
            f"The converted file of {q_model.name!r} does not compute what the Keras quantized model does: on "
            f"{result.samples} calibration sample(s) its outputs reach only {result.sqnr_db:.1f} dB SQNR against "
            f"Keras (largest difference {result.max_abs_error:.4g}; kerasq requires {MIN_SQNR_DB:g} dB), and it is "
            f"farther from the model without rounding ({result.file_vs_float_db:.1f} dB) than Keras is "
            f"({result.keras_vs_float_db:.1f} dB).{where} "
            "Replace float layers between quantized ones with layers kerasq quantizes, or export FAKELY_QUANT; "
            "verify=False writes the file anyway."
        )
    return result


def unrounded_twin(q_model: keras.Model) -> keras.Model:
    """``q_model`` without its rounding: quantizers are identities, weighted layers use their float kernels
    (with the biases kerasq corrected). The reference both the file and the Keras model are compared with."""
    graph = read_model(q_model)
    tensors: dict[int, Any] = fresh_inputs(graph)
    inputs = list(tensors.values())
    for node in graph.nodes:
        args = resolve_refs(node.args, tensors)
        if isinstance(node.op, (ActivationQuantizer, FusedTensorRange)):
            tensors[node.outputs[0]] = args[0]
            continue
        op = node.op.layer if isinstance(node.op, QuantizeWrapper) else node.op
        outputs = op(*args, **resolve_refs(node.kwargs, tensors))
        tensors.update(zip(node.outputs, keras.tree.flatten(outputs), strict=True))
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, resolve_refs(graph.outputs, tensors))


def _skipped(reason: str) -> Verification:
    return Verification(samples=0, sqnr_db=float("nan"), max_abs_error=float("nan"), skipped=reason)
