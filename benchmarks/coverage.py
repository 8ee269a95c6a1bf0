"""Every ``keras.applications`` architecture through PTQ, INT8 export, LiteRT and TFLM, on each platform.

    python -m benchmarks.coverage [--models all|NASNetMobile,ResNet50,...] [--platforms tflite,imx500]
        [--size 96] [--n-samples 32] [--eval-samples 64] [--data cifar|random] [--row-timeout 1800]
        [--report coverage]

Random weights (``weights=None``; nothing is downloaded) with BatchNormalization statistics set from one
batch of the calibration images (Keras's initial ones make some networks' outputs vanish), logits out
(``classifier_activation=None``: the 1000-class softmax of an untrained network puts almost every
probability below TFLite's 1/256 output step, which would make every comparison trivially equal). Inputs: CIFAR-10 images resized to ``--size`` (or
uniform noise in [0, 255] with ``--data random``) through the architecture's own ``preprocess_input``;
calibration from the training file, held-out images from the test file. Each row runs in its own process,
so a crash, an out-of-memory kill or a timeout is that row's gap, never the benchmark's end. Columns:

- params: the float model's parameters;
- PTQ s: ``keras_post_training_quantization`` wall time; float s: ``model.predict`` over the same calibration
  images (batch 32) after a one-batch warm-up, the fastest of ``FLOAT_RUNS`` runs (one run on a shared machine
  can take several times as long); x float: their ratio;
- export s: ``convert(q, INT8)`` (conversion, LiteRT's integer check and the self-check against the Keras
  model on its kept calibration samples); bytes / param: the file;
- SQNR dB: 10 log10(sum q^2 / sum (q - f)^2) of the file's outputs f against the Keras quantized model's q on
  the held-out images, and how often their top-1 classes agree;
- Keras / file vs unrounded dB: the SQNR of the Keras quantized model and of the file against the same network
  without rounding (``kerasq.export.verify.unrounded_twin``): how much of the file-vs-Keras difference is the
  network amplifying rounding (random weights do), rather than the file computing something else;
- format floor / param: the constants plus each distinct quantization vector once
  (``kerasq.export.file_bytes``): what any valid per-channel INT8 file of these tensors must hold;
- Keras vs jittered Keras dB: the Keras quantized model against itself with about 1% of its input values
  moved one grid step (``jittered``): how far a network amplifies a one-step difference on a few values,
  which bounds the file-vs-Keras SQNR of any file whose rounding is not bit-identical to Keras's;
- TFLM vs LiteRT dB / agree %: the same file run by TensorFlow Lite Micro (its reference kernels, as on a
  microcontroller) against LiteRT's default kernels (XNNPACK and the optimized builtins), on the held-out images:
  two runtimes of one file, whose requantizations round a few values differently. On these random-weight
  networks that difference grows through the layers just like the file-vs-Keras one, so where this column is
  below 30 dB no Keras model could reach 30 dB against both runtimes; TFLM arena KiB: the tensor arena the file
  needs on a device (``kerasq.export.tflm.tflm_arena``);
- float / gap: layers kerasq kept float (and why) and tensors the file left float; or, when a stage failed,
  ``GAP <stage>: <exception>``.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")

PLATFORMS = ("tflite", "imx500")
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}  # smallest inputs they accept
BATCH = 32
JITTER = 0.01  # of an input step, for the "Keras vs jittered Keras" column
TRIM = 300  # characters of an exception kept in the table
FLOAT_RUNS = 3  # float passes timed; the fastest is the ratio's denominator


class RowTimeout(Exception):
    """The row ran past ``--row-timeout``."""


def architectures() -> list[str]:
    """Every model constructor ``keras.applications`` exports, by name."""
    import keras

    return sorted(
        n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n))
    )


def _preprocess(name: str):
    """The ``preprocess_input`` of the public ``keras.applications`` module of constructor ``name`` (the one
    exporting it, else the one named like the module defining it: ``mobilenet_v3`` exports no constructor)."""
    import keras

    apps, constructor = keras.applications, getattr(keras.applications, name)
    modules = {m: getattr(apps, m) for m in dir(apps) if m[0].islower()}
    for module in modules.values():
        if getattr(module, name, None) is constructor:
            return module.preprocess_input
    defined_in = constructor.__module__.rsplit(".", 1)[-1]
    if defined_in in modules:
        return modules[defined_in].preprocess_input
    raise ValueError(f"no keras.applications module has the preprocess_input of {name}")


def _batch_norms(layer):
    """Every BatchNormalization in ``layer`` (nested models included)."""
    import keras

    for inner in getattr(layer, "layers", []):
        yield from _batch_norms(inner)
    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer


def calibrate_batch_norms(model, x) -> None:
    """BatchNormalization statistics from one training-mode pass over ``x``: with Keras's initial ones a
    random-weight MobileNetV3 shrinks its signal to ~1e-11 and quantizes every output to 0."""
    norms = list(_batch_norms(model))
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0
    model(x, training=True)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum


def build(name: str, size: int):
    import keras

    constructor = getattr(keras.applications, name)
    shape = (max(size, MIN_SIZE.get(name, 0)),) * 2 + (3,)
    keras.utils.set_random_seed(0)
    try:
        return constructor(weights=None, input_shape=shape, classifier_activation=None)
    except TypeError:  # a constructor without classifier_activation
        return constructor(weights=None, input_shape=shape)


def images(name: str, size: int, n_samples: int, eval_samples: int, data: str):
    """(calibration, held-out) images at the model's input size, through its preprocessing."""
    import keras
    import numpy as np

    from benchmarks.zoo import data_dir, eval_subset

    if data == "random":
        rng = np.random.default_rng(0)
        calib = rng.uniform(0, 255, (n_samples, 32, 32, 3))
        held = rng.uniform(0, 255, (eval_samples, 32, 32, 3))
    else:
        train, test = np.load(data_dir() / "cifar10_train.npz"), np.load(data_dir() / "cifar10_test.npz")
        calib = eval_subset(train["x"], train["y"], n_samples)[0]
        held = eval_subset(test["x"], test["y"], eval_samples)[0]
    preprocess = _preprocess(name)

    def prepare(x):
        resized = keras.ops.convert_to_numpy(keras.ops.image.resize(x.astype("float32"), (size, size)))
        return np.asarray(preprocess(resized), "float32")

    return prepare(calib), prepare(held)


def float_report(info, flatbuffer: bytes | None) -> str:
    """Layers kerasq kept float, counted by kerasq's reason, and float tensors left in the file."""
    from collections import Counter

    from kerasq.export.runtimes import float_tensors

    reasons = Counter(info.float_layers.values())
    parts = [f"{count} x {why}" for why, count in reasons.most_common()]
    if flatbuffer is not None:
        left = float_tensors(flatbuffer)
        if left:
            parts.append(f"{len(left)} float tensors in the file: {', '.join(left[:4])}")
    return "; ".join(parts) or "none"


def jittered(x, fraction: float = JITTER):
    """``x`` with each value moved up or down (random sign) by ``fraction`` of an 8-bit step of its range:
    about that fraction of the input quantizer's values move to the next level, everything else is
    unchanged. The Keras model's SQNR against itself under this jitter bounds what any file whose rounding
    differs from Keras's on a few values (LiteRT's fixed-point requantization does) can reach."""
    import numpy as np

    step = (float(x.max()) - float(x.min())) / 255.0
    signs = np.random.default_rng(1).choice(np.float32([-1.0, 1.0]), size=x.shape)
    return (x + signs * np.float32(fraction * step)).astype(x.dtype)


def _gap(row: dict, stage: str, err: BaseException) -> dict:
    """The row as a gap: what was found before the failing stage, then the stage and its exception."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    gap = f"GAP {stage}: {text[:TRIM]}" + ("..." if len(text) > TRIM else "")
    row["floats"] = f"{row['floats']}; {gap}" if row.get("floats") not in (None, "none") else gap
    return row


def _on_alarm(signum, frame):
    raise RowTimeout("row timed out")


def worker(
    platform: str, name: str, size: int, n_samples: int, eval_samples: int, data: str, timeout: int
) -> dict:
    """One row: build, float pass, PTQ, export, LiteRT, TFLM; the first failing stage ends the row as a gap."""
    import numpy as np

    row: dict = {"model": name, "platform": platform}
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(timeout)
    stage = "build"
    try:
        import kerasq
        from benchmarks.common import timed
        from kerasq.export import QuantizationFormat
        from kerasq.export.file_bytes import file_bytes
        from kerasq.export.runtimes import predict_litert
        from kerasq.export.tflite import convert
        from kerasq.export.tflm import predict_tflm, tflm_arena
        from kerasq.export.verify import sqnr_db, unrounded_twin

        model = build(name, size)
        row["params"] = int(model.count_params())
        row["size"] = int(model.inputs[0].shape[1])
        calib, held = images(name, row["size"], n_samples, eval_samples, data)
        calibrate_batch_norms(model, calib[:BATCH])
        stage = "float"
        model.predict(calib[:BATCH], batch_size=BATCH, verbose=0)
        row["float_s"] = min(
            timed(model.predict, calib, batch_size=BATCH, verbose=0)[1] for _ in range(FLOAT_RUNS)
        )
        stage = "PTQ"
        tpc = kerasq.get_target_platform_capabilities(platform)
        (q_model, info), row["ptq_s"] = timed(
            kerasq.ptq.keras_post_training_quantization, model, calib, target_platform_capabilities=tpc
        )
        row["ratio"] = row["ptq_s"] / row["float_s"]
        row["floats"] = float_report(info, None)
        stage = "export"
        conversion, row["export_s"] = timed(convert, q_model, QuantizationFormat.INT8)
        flatbuffer = conversion.flatbuffer
        row["bytes_per_param"] = len(flatbuffer) / row["params"]
        row["floor_per_param"] = file_bytes(flatbuffer).floor / row["params"]
        stage = "LiteRT"
        keras_out = q_model.predict(held, batch_size=BATCH, verbose=0)
        litert_out = predict_litert(flatbuffer, held, batch_size=BATCH)
        row["sqnr_db"] = sqnr_db(keras_out, litert_out)
        unrounded = unrounded_twin(q_model).predict(held, batch_size=BATCH, verbose=0)
        row["keras_db"], row["file_db"] = sqnr_db(unrounded, keras_out), sqnr_db(unrounded, litert_out)
        row["jitter_db"] = sqnr_db(keras_out, q_model.predict(jittered(held), batch_size=BATCH, verbose=0))
        row["agree"] = float(np.mean(np.argmax(keras_out, -1) == np.argmax(litert_out, -1)) * 100.0)
        row["floats"] = float_report(info, flatbuffer)
        stage = "TFLM"
        tflm_out = predict_tflm(flatbuffer, held)
        row["tflm_db"] = sqnr_db(litert_out, tflm_out)
        row["tflm_agree"] = float(np.mean(np.argmax(litert_out, -1) == np.argmax(tflm_out, -1)) * 100.0)
        row["arena_kib"] = tflm_arena(flatbuffer).total / 1024
    except (Exception, RowTimeout) as err:  # a failing stage is the row's finding
        _gap(row, stage, err)
    finally:
        signal.alarm(0)
    return row


COLUMNS = [("model", "architecture"), ("platform", "platform"), ("size", "px"), ("params", "params"),
           ("ptq_s", "PTQ s"), ("float_s", "float s"), ("ratio", "x float"), ("export_s", "export s"),
           ("bytes_per_param", "bytes / param"), ("floor_per_param", "format floor / param"),
           ("sqnr_db", "SQNR dB"), ("agree", "top-1 agree %"), ("keras_db", "Keras vs unrounded dB"),
           ("file_db", "file vs unrounded dB"), ("jitter_db", "Keras vs jittered Keras dB"),
           ("tflm_db", "TFLM vs LiteRT dB"), ("tflm_agree", "TFLM vs LiteRT agree %"),
           ("arena_kib", "TFLM arena KiB"),
           ("floats", "float / gap")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="kerasq keras.applications coverage benchmark")
    parser.add_argument("--models", default="all", help="comma-separated constructor names, or 'all'")
    parser.add_argument("--platforms", default=",".join(PLATFORMS))
    parser.add_argument("--size", type=int, default=96, help="input size (raised to what a model needs)")
    parser.add_argument("--n-samples", type=int, default=32, help="calibration images")
    parser.add_argument("--eval-samples", type=int, default=64, help="held-out images for SQNR / agreement")
    parser.add_argument("--data", choices=("cifar", "random"), default="cifar")
    parser.add_argument("--row-timeout", type=int, default=1800, help="seconds before a row becomes a gap")
    parser.add_argument("--report", default="coverage", help="writes benchmarks/results/<report>.md")
    parser.add_argument("--worker", nargs=2, metavar=("PLATFORM", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        row = worker(*args.worker, args.size, args.n_samples, args.eval_samples, args.data, args.row_timeout)
        print(json.dumps(row))
        return 0

    from benchmarks.common import format_table, forwarded, machine_info, publish, run_rows

    known = architectures()
    models = known if args.models == "all" else args.models.split(",")
    unknown = [m for m in models if m not in known]
    platforms = args.platforms.split(",")
    if unknown or not set(platforms) <= set(PLATFORMS):
        parser.error(f"unknown models {unknown} or platforms {platforms}; models: {', '.join(known)}")
    extra = forwarded(args, "size", "n_samples", "eval_samples", "data", "row_timeout")
    start = time.perf_counter()
    rows = run_rows("benchmarks.coverage", models, platforms, extra)
    for row in rows:  # a worker that died (killed, out of memory) reports only an error
        if "error" in row:
            row["floats"] = f"GAP worker: {row.pop('error')[:TRIM]}"
    gaps = sum("GAP " in str(r.get("floats", "")) for r in rows)
    header = (f"kerasq keras.applications coverage, {datetime.date.today()}, {machine_info()}; random weights, "
              f"input {args.size} px, {args.n_samples} calibration and {args.eval_samples} held-out {args.data} "
              f"images; {len(rows)} rows, {gaps} gaps, {time.perf_counter() - start:.0f} s")  # fmt: skip
    publish(args.report, header + "\n\n" + format_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
