"""The bad-input matrix: each case is one call that must fail with a kerasq error naming what is wrong.

``Case(id, call, names)``: ``call()`` must raise a ``kerasq.KerasqError`` whose message matches every regex in
``names`` (the argument, field or layer at fault) and says what to do (a word from ``_FIX``). A case that
failed before the issue-13 fixes in code outside the area that wrote it records that area (``owner``) and how
it failed (``reason``, ``before``): the history the closing matrix reports; every case passes now.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pytest

import kerasq

# words of an instruction: every message says what to do, not only what is wrong
_FIX = re.compile(
    r"\b(must|use|pass|give|one of|needs?|expected|raise|remove|fix|choose|rebuild|load|call|clean|"
    r"reshape|quantize|export|start|build|select)\b",
    re.IGNORECASE,
)


class NoError(AssertionError):
    """The call returned: the bad input passed silently."""


class Unclear(AssertionError):
    """The message does not name the argument, or does not say what to do."""


class NotKerasqError(AssertionError):
    """The error is not a ``kerasq.KerasqError`` (a builtin or third-party exception escaped)."""


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[], object]
    names: tuple[str, ...]
    owner: str | None = None  # the area whose code had to change for this case to pass
    reason: str = ""  # what that code did before the fix
    today: str = "builtin"  # how it failed before: "builtin" error, "silent" (no error) or "unclear" message


def params(cases: Sequence[Case]) -> list:
    """One ``pytest.param`` per case, with the case's id."""
    return [pytest.param(case, id=case.id) for case in cases]


def check(case: Case) -> kerasq.KerasqError:
    """Run the case: it must raise, name ``case.names``, say what to do, and be a ``KerasqError``."""
    try:
        case.call()
    except Exception as raised:  # noqa: BLE001 - the type is checked below, after the message
        err = raised
    else:
        raise NoError(f"{case.id}: no error was raised")
    message = str(err)
    for name in case.names:
        if not re.search(name, message):
            raise Unclear(f"{case.id}: the message does not name {name!r}: {message}")
    if not _FIX.search(message):
        raise Unclear(f"{case.id}: the message does not say what to do: {message}")
    if not isinstance(err, kerasq.KerasqError):
        raise NotKerasqError(
            f"{case.id}: {type(err).__module__}.{type(err).__name__} is not a KerasqError: {err}"
        )
    return err


def field_ids(cases: Sequence[Case]) -> set[str]:
    """``Class.field`` of every case whose id starts so (``QuantizationConfig.l_p_value=0`` -> the field)."""
    return {re.split(r"[=\[(: ]", case.id, maxsplit=1)[0] for case in cases}


# small models the cases call kerasq with (built once: every call fails before any real work)


@functools.cache
def tiny_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="tiny")


@functools.cache
def two_input_model() -> keras.Model:
    a, b = keras.Input((4,), name="left"), keras.Input((4,), name="right")
    x = keras.layers.Concatenate(name="join")([a, b])
    return keras.Model([a, b], keras.layers.Dense(2, name="head")(x), name="two_inputs")


def images(n: int = 8, shape: tuple[int, ...] = (8, 8, 3), dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (n, *shape)).astype(dtype)
