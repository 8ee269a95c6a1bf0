"""Arrays from files: the inputs of an .npz are found by name, never guessed."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq.data.files import load_arrays
from kerasq.errors import DataError

X = np.arange(24, dtype=np.float32).reshape(6, 4)
Y = np.arange(6)


@pytest.mark.parametrize(
    ("arrays", "labels"),
    [({"y": Y, "x": X}, Y), ({"labels": Y, "images": X}, Y), ({"arr_0": X}, None), ({"calib": X}, None)],
    ids=["x-after-y", "images", "one-unnamed", "one-named"],
)
def test_inputs_are_the_named_or_the_only_array(tmp_path, arrays, labels):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    x, y = load_arrays(path)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, labels) if labels is not None else None
    assert (y is None) == (labels is None)


@pytest.mark.parametrize(
    "arrays", [{"y": Y, "data": X}, {"y": Y}, {"a": X, "b": X}], ids=["labels-first", "labels-only", "two"]
)
def test_ambiguous_npz_names_its_keys_and_the_fix(tmp_path, arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"holds the arrays \[.*\] but none is named x") as err:
        load_arrays(path)
    assert all(repr(k) in str(err.value) for k in arrays)
    assert "np.savez(path, x=inputs, y=labels)" in str(err.value)
