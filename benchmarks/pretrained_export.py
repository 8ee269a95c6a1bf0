"""A pretrained model this repo did not build: PTQ on both platforms, INT8 export, LiteRT, side by side.

    pip download --no-deps cifar-10-model -d /tmp/pre && unzip -o /tmp/pre/cifar_10_model-*.whl -d /tmp/pre/w
    python -m benchmarks.pretrained_export --h5 /tmp/pre/w/cifar_10_model/trained_models/cnn_model.h5

The ``cifar-10-model`` wheel (PyPI) ships a VGG-style CIFAR-10 CNN (Conv2D + BatchNormalization, 969k
parameters) that reads raw 0-255 pixels. 256 shuffled training images calibrate; 2,000 shuffled test images
measure. Columns: top-1 of the float model, the Keras quantized model and the INT8 file; how often the file's
top-1 equals the Keras model's; SQNR of the file's outputs against Keras; file bytes per parameter; places the
file requantizes; the export self-check. ``--layers N``: per quantized tensor, how often the file's int8
tensor differs from the Keras layer's output on N images, end to end and given the file's own inputs.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")


def _file_tensors(flatbuffer: bytes, x: Any) -> dict[str, tuple[Any, float, int]]:
    """Every per-tensor int8 tensor of the file on ``x`` (LiteRT, all tensors kept): name -> (values, scale,
    zero point)."""
    import numpy as np

    from kerasq.export.runtime_imports import litert_interpreter_module

    interpreter = litert_interpreter_module().Interpreter(
        model_content=flatbuffer, experimental_preserve_all_tensors=True
    )
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    found = {}
    for detail in interpreter.get_tensor_details():
        params = detail["quantization_parameters"]
        if detail["dtype"] != np.int8 or len(params["scales"]) != 1:
            continue
        value = interpreter.get_tensor(detail["index"])
        if value.ndim and value.shape[0] == len(x):
            found[detail["name"]] = (
                value.astype(np.int32),
                float(params["scales"][0]),
                int(params["zero_points"][0]),
            )
    return found


def layer_steps(q_model: Any, flatbuffer: bytes, x: Any) -> list[dict]:
    """Per activation quantizer of ``q_model``: the share of its elements where the file's tensor on the same
    grid differs from Keras, and by how many steps at most, end to end ("e2e") and given the file's own
    inputs ("local": the Keras layers replayed on the file's upstream tensors, so a difference there is the
    layer's own)."""
    import keras
    import numpy as np

    from kerasq.graph import read_model
    from kerasq.graph.model_graph import resolve_refs
    from kerasq.quantizers import ActivationQuantizer

    tensors, graph = _file_tensors(flatbuffer, x), read_model(q_model)
    free, forced = {graph.inputs[0]: x}, {graph.inputs[0]: x}
    rows = []
    for node in graph.nodes:
        for values in (free, forced):
            out = node.op(*resolve_refs(node.args, values), **resolve_refs(node.kwargs, values))
            values.update(
                zip(node.outputs, map(keras.ops.convert_to_numpy, keras.tree.flatten(out)), strict=True)
            )
        if not isinstance(node.op, ActivationQuantizer):
            continue
        scale, keras_value = node.op.grid()[0], free[node.outputs[0]]
        candidates = [(v - z) * s for v, s, z in tensors.values()
                      if v.size == keras_value.size and abs(s - scale) <= 1e-6 * scale]  # fmt: skip
        if not candidates:
            continue
        got = min(
            (c.reshape(keras_value.shape) for c in candidates), key=lambda c: np.mean(np.abs(c - keras_value))
        )
        e2e = np.round((got - keras_value) / scale)
        local = np.round((got - forced[node.outputs[0]]) / scale)
        forced[node.outputs[0]] = got
        rows.append({"tensor": node.name, "e2e": f"{np.mean(e2e != 0) * 100:.3f}", "e2e_max": int(np.abs(e2e).max()),
                     "local": f"{np.mean(local != 0) * 100:.4f}", "local_max": int(np.abs(local).max())})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    import keras
    import numpy as np

    import kerasq
    from benchmarks.common import format_table, machine_info, publish, timed
    from benchmarks.zoo import data_dir
    from kerasq.export import QuantizationFormat
    from kerasq.export.runtimes import predict_litert
    from kerasq.export.tflite import convert
    from kerasq.export.verify import sqnr_db

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h5", required=True, help="the model file (see the module docstring)")
    parser.add_argument("--report", default="pretrained_export")
    parser.add_argument(
        "--layers", type=int, default=0, help="also compare every int8 tensor on this many images"
    )
    args = parser.parse_args(argv)

    model = keras.models.load_model(args.h5, compile=False)
    train, test = np.load(data_dir() / "cifar10_train.npz"), np.load(data_dir() / "cifar10_test.npz")
    rng = np.random.default_rng(0)
    calibration = train["x"][rng.permutation(len(train["y"]))[:256]].astype("float32")
    picked = rng.permutation(len(test["y"]))[:2000]
    x, y = test["x"][picked].astype("float32"), test["y"][picked].reshape(-1)
    float_top1 = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y) * 100)
    rows, layer_tables = [], []
    for platform in ("imx500", "tflite"):
        tpc = kerasq.get_target_platform_capabilities(platform)
        (q_model, _), ptq_s = timed(
            kerasq.ptq.keras_post_training_quantization, model, calibration, target_platform_capabilities=tpc
        )
        keras_out = q_model.predict(x, verbose=0)
        conversion = convert(q_model, QuantizationFormat.INT8)
        file_out = predict_litert(conversion.flatbuffer, x)
        rows.append({
            "platform": platform, "float": float_top1, "ptq_s": ptq_s,
            "keras": float(np.mean(keras_out.argmax(-1) == y) * 100),
            "file": float(np.mean(file_out.argmax(-1) == y) * 100),
            "agree": float(np.mean(keras_out.argmax(-1) == file_out.argmax(-1)) * 100),
            "sqnr": sqnr_db(keras_out, file_out),
            "bytes": len(conversion.flatbuffer) / model.count_params(),
            "requantized": len(conversion.requantized),
            "check": f"{conversion.verification.sqnr_db:.1f} dB on {conversion.verification.samples} samples",
        })  # fmt: skip
        if args.layers:
            steps = layer_steps(q_model, conversion.flatbuffer, x[: args.layers])
            layer_tables.append(
                f"{platform}, {args.layers} images:\n\n" + format_table(steps, _LAYER_COLUMNS)
            )
    columns = [("platform", "platform"), ("float", "float top-1 %"), ("keras", "Keras quantized top-1 %"),
               ("file", "INT8 file top-1 %"), ("agree", "file = Keras top-1 %"), ("sqnr", "file vs Keras dB"),
               ("bytes", "bytes / param"), ("requantized", "requantized places"), ("ptq_s", "PTQ s"),
               ("check", "self-check")]  # fmt: skip
    title = (f"kerasq on the cifar-10-model wheel's cnn_model.h5 ({model.count_params()} params), "
             f"{machine_info()}; 256 calibration, 2,000 test images")  # fmt: skip
    layers = "".join(f"\n{table}\n" for table in layer_tables)
    publish(args.report, f"{title}\n\n{format_table(rows, columns)}\n{layers}")
    return 0


_LAYER_COLUMNS = [("tensor", "quantized tensor"), ("e2e", "file != Keras %"), ("e2e_max", "max steps"),
                  ("local", "file != Keras on the file's inputs %"), ("local_max", "max steps")]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
