"""What one read of the calibration data held, gathered batch by batch: counts, and signs of degenerate data.

Grids are chosen from the calibration data alone, so data that cannot show the model's real inputs gives a
quantized model that looks fine and computes garbage: an all-zero input gets a grid of width ~1e-5 and the
quantized model then outputs a constant. Such data is reported, not refused (a constant input can be
deliberate, e.g. a mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class DataProfile:
    """Per model input: the smallest and largest value, and whether any sample differs from the first."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.batches = 0
        self.samples = 0
        self._low = np.full(len(self.names), np.inf)
        self._high = np.full(len(self.names), -np.inf)
        self._first: list[np.ndarray | None] = [None] * len(self.names)
        self._varied = np.zeros(len(self.names), bool)

    def add(self, arrays: Sequence[np.ndarray]) -> None:
        """Fold one validated, non-empty batch (one array per input, batch first) in."""
        for i, array in enumerate(arrays):
            self._low[i] = min(self._low[i], float(np.min(array)))
            self._high[i] = max(self._high[i], float(np.max(array)))
            if self._first[i] is None:
                self._first[i] = np.array(array[0])
            if not self._varied[i]:
                self._varied[i] = bool(np.any(array != self._first[i]))
        self.batches += 1
        self.samples += len(arrays[0])

    def warnings(self) -> list[str]:
        """One message per input that is constant, or whose samples are all the same."""
        messages = []
        for i, name in enumerate(self.names):
            if self._low[i] == self._high[i]:
                messages.append(self._constant(name, float(self._low[i])))
            elif not self._varied[i] and self.samples > 1:
                messages.append(
                    f"Representative data: all {self.samples} samples of input {name!r} are identical, so every "
                    "grid fits that one sample and other inputs may be clipped. Calibrate on varied samples (a few "
                    "hundred training images, preprocessed like the model's inputs)."
                )
        return messages

    def _constant(self, name: str, value: float) -> str:
        what = "all zeros" if value == 0 else f"every value is {value:g}"
        return (
            f"Representative data: input {name!r} is constant ({what} in all {self.samples} samples). Grids chosen "
            "on it span that single value (about 1e-5 wide for zeros), so real inputs are clipped and the quantized "
            "model's output hardly depends on them. Calibrate on real samples (a few hundred training images, "
            "preprocessed like the model's inputs)."
        )
