"""Export arguments and GPTQ configs: unknown formats, mismatched options and out-of-range fields."""

from __future__ import annotations

import dataclasses
import functools
import math

import keras
import numpy as np
import pytest
from bad_input.matrix import Case, check, field_ids, images, params, tiny_model

import kerasq
from kerasq.export import keras_export_model
from kerasq.export.runtimes import predict
from kerasq.gptq import GradientPTQConfig, get_keras_gptq_config, keras_gradient_post_training_quantization

EXPORT = "kerasq/export (exporter.py)"
GPTQ = "kerasq/gptq (config.py)"
BUILTIN = "raises a builtin ValueError"
UNCLEAR = "raises a builtin ValueError that does not say what to do (pass quantization_format=INT8)"


@functools.cache
def quantized() -> keras.Model:
    return kerasq.ptq.keras_post_training_quantization(tiny_model(), images())[0]


def _export(path: str = "q.tflite", **kwargs) -> Case:
    kwargs.setdefault("serialization_format", "tflite")
    return lambda: keras_export_model(quantized(), f"/nonexistent-kerasq-dir/{path}", **kwargs)


EXPORTS = [
    Case(
        "export(serialization_format='onnx')",
        _export("q.onnx", serialization_format="onnx"),
        ("serialization_format='onnx'", "KERAS, SAVEDMODEL, TFLITE"),
    ),
    Case("export(serialization_format=3)", _export(serialization_format=3), ("serialization_format=3",)),
    Case(
        "export(quantization_format='int4')",
        _export(quantization_format="int4"),
        ("quantization_format='int4'", "FAKELY_QUANT, INT8"),
    ),
    Case("export(quantization_format=None)", _export(quantization_format=None), ("quantization_format",)),
    Case(
        "export(INT8 of a float model)",
        lambda: keras_export_model(tiny_model(), "/nonexistent-kerasq-dir/f.tflite", "tflite", "int8"),
        ("'tiny'", "no kerasq quantizers", "keras_post_training_quantization"),
    ),
    Case(
        "export(model='q.keras')",
        lambda: keras_export_model("q.keras", "/nonexistent-kerasq-dir/q.keras"),
        ("model", "str"),
        EXPORT,
        BUILTIN,
    ),
    Case("export(.keras path for TFLITE)", _export("q.keras"), ("TFLITE", "'.tflite'"), EXPORT, BUILTIN),
    Case(
        "export(INT8 as KERAS)",
        _export("q.keras", serialization_format="keras", quantization_format="int8"),
        ("INT8", "TFLITE"),
        EXPORT,
        BUILTIN,
    ),
    Case(
        "export(integer_io without INT8)",
        _export(integer_io=True),
        ("integer_io",),
        EXPORT,
        UNCLEAR,
        "unclear",
    ),
    Case(
        "export(int4_weights without INT8)",
        _export(int4_weights=True),
        ("int4_weights",),
        EXPORT,
        UNCLEAR,
        "unclear",
    ),
    Case(
        "predict(runtime='onnx')",
        lambda: predict(b"", np.zeros((1, 8, 8, 3), "float32"), runtime="onnx"),
        ("runtime 'onnx'", "litert"),
        "kerasq/export (runtimes.py)",
        BUILTIN,
    ),
]


def _gptq_cases(field: str, values, reason: str = BUILTIN, today: str = "builtin") -> list[Case]:
    return [
        Case(
            f"GradientPTQConfig.{field}={v!r}",
            lambda v=v: GradientPTQConfig(**{"n_epochs": 1, field: v}),
            (rf"GradientPTQConfig\.{field}",),
            GPTQ,
            reason,
            today,
        )  # fmt: skip
        for v in values
    ]


_NOT_CHECKED = "not validated: any value is accepted and read as truthy"
GPTQ_CASES = [
    *_gptq_cases("n_epochs", [0, 2.5, True]),
    *_gptq_cases("optimizer", ["adam"]),
    *_gptq_cases("optimizer_rest", [keras.optimizers.Adam]),
    *_gptq_cases("loss", ["mse"]),
    *_gptq_cases("log_function", [print.__name__]),
    *_gptq_cases("use_hessian_based_weights", ["yes"], _NOT_CHECKED, "silent"),
    Case(
        "GradientPTQConfig.use_hessian_sample_attention=True without Hessian weights",
        lambda: GradientPTQConfig(1, use_hessian_based_weights=False, use_hessian_sample_attention=True),
        (r"GradientPTQConfig\.use_hessian_sample_attention", "use_hessian_based_weights=True"),
        GPTQ,
        BUILTIN,
    ),
    *_gptq_cases("hessian_num_samples", [0, 8.0]),
    *_gptq_cases("regularization_factor", [-1.0, math.nan]),
    *_gptq_cases("regularization_factor", [math.inf], "inf is accepted (and makes the loss inf)", "silent"),
    *_gptq_cases("rounding_warmup", [1.0, -0.1, math.nan]),
    *_gptq_cases("hard_phase", [1.0, "0.25"]),
    *_gptq_cases("train_bias", ["no"], _NOT_CHECKED, "silent"),
    *_gptq_cases("train_scales", ["no"], _NOT_CHECKED, "silent"),
    *_gptq_cases("gradual_activation_quantization", [0, 1.5, "yes"]),
    Case(
        "get_keras_gptq_config(n_epochs=0)", lambda: get_keras_gptq_config(0), (r"n_epochs",), GPTQ, BUILTIN
    ),
    Case(
        "get_keras_gptq_config(hessian_batch_size=0)",
        lambda: get_keras_gptq_config(1, hessian_batch_size=0),
        ("hessian_batch_size|hessian_num_samples",),
        GPTQ,
        BUILTIN,
    ),
    Case(
        "gptq(gptq_config=None)",
        lambda: keras_gradient_post_training_quantization(tiny_model(), images(), None),
        ("gptq_config",),
        "kerasq/gptq (quantize.py)",
        BUILTIN,
    ),
    Case(
        "gptq(model=Sequential without inputs)",
        lambda: keras_gradient_post_training_quantization(keras.Sequential(), images(), GradientPTQConfig(1)),
        ("not built",),
    ),
    Case(
        "gptq(core_config=ResourceUtilization)",
        lambda: keras_gradient_post_training_quantization(
            tiny_model(), images(), GradientPTQConfig(1), core_config=kerasq.core.ResourceUtilization()
        ),
        ("core_config",),
        "ptq.py",
        "_check_arguments raises a builtin ValueError",
    ),
]


@pytest.mark.parametrize("case", params(EXPORTS))
def test_bad_export_argument(case):
    check(case)


@pytest.mark.parametrize("case", params(GPTQ_CASES))
def test_bad_gptq_config(case):
    check(case)


def test_every_gptq_field_has_a_bad_value_case():
    covered = field_ids(GPTQ_CASES)
    missing = [
        f.name for f in dataclasses.fields(GradientPTQConfig) if f"GradientPTQConfig.{f.name}" not in covered
    ]
    assert not missing, f"no bad-value case for GradientPTQConfig fields {missing}"
