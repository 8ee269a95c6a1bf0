"""The threshold-search objectives, one entry per ``QuantizationErrorMethod``: what a search needs to know to
score candidate grids with it.

A new objective is one enum member (``kerasq.config.enums``) and one entry here: its error function over the
candidates (``kerasq.params.blocked_errors`` has the Lp and KL ones) and the flags below; the searches in
``kerasq.params.search`` read nothing else about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kerasq.config.enums import QuantizationErrorMethod as E
from kerasq.errors import ConfigError
from kerasq.params.blocked_errors import SearchValues, kl_candidate_errors, lp_candidate_errors

# errors(values, scale [K, C], zero_point [K, C], qmin, qmax, l_p_value) -> error of each candidate [K, C]
CandidateErrors = Callable[[SearchValues, np.ndarray, np.ndarray, int, int, float], np.ndarray]


@dataclass(frozen=True)
class ErrorMethodSpec:
    """How one objective scores candidate grids.

    ``errors``: None for an objective that is not searched (the no-clipping grid is the answer).
    ``bin_centres``: it reads a histogram as bin centres and widths (KL), not as exact intervals; kernels are
    then histogrammed per channel first. ``refine``: a finer look around the coarse choice helps (not for KL:
    it would chase where features fall between levels). ``weights_only`` / ``needs_importance``: it applies to
    kernels only, and needs per-weight Hessian scores (HMSE).
    """

    errors: CandidateErrors | None
    bin_centres: bool = False
    refine: bool = True
    weights_only: bool = False
    needs_importance: bool = False


def _lp(power: float | None) -> CandidateErrors:
    """Mean ``|error|**power``; None: the configured ``l_p_value``."""

    def errors(values: SearchValues, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
               l_p_value: float) -> np.ndarray:  # fmt: skip
        return lp_candidate_errors(
            values, scale, zero_point, qmin, qmax, float(l_p_value if power is None else power)
        )

    return errors


def _kl(values: SearchValues, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
        l_p_value: float) -> np.ndarray:  # fmt: skip
    return kl_candidate_errors(values, scale, zero_point, qmin, qmax)


ERROR_METHODS: dict[E, ErrorMethodSpec] = {
    E.NOCLIPPING: ErrorMethodSpec(errors=None),
    E.MSE: ErrorMethodSpec(errors=_lp(2.0)),
    E.MAE: ErrorMethodSpec(errors=_lp(1.0)),
    E.LP: ErrorMethodSpec(errors=_lp(None)),
    E.KL: ErrorMethodSpec(errors=_kl, bin_centres=True, refine=False),
    E.HMSE: ErrorMethodSpec(errors=_lp(2.0), weights_only=True, needs_importance=True),
}


def error_method_spec(method: E) -> ErrorMethodSpec:
    """The entry of ``method``; a ConfigError for anything that is not a registered QuantizationErrorMethod."""
    spec = ERROR_METHODS.get(method) if isinstance(method, E) else None
    if spec is None:
        known = ", ".join(f"QuantizationErrorMethod.{m.name}" for m in ERROR_METHODS)
        raise ConfigError(f"error_method must be one of {known}; got {method!r}.")
    return spec


def usable_for_activations(method: E) -> list[E]:
    """The registered objectives that apply to activations (for error messages)."""
    return [m for m, spec in ERROR_METHODS.items() if not spec.weights_only and m is not method]
