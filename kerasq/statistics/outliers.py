"""Outlier removal on a tensor's statistics before threshold selection (``QuantizationConfig.z_threshold``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasq.statistics.histogram import TensorStats


def remove_outliers(stats: TensorStats, z_threshold: float) -> TensorStats:
    """``stats`` without the values whose z-score ``|x - mean| / std`` exceeds ``z_threshold``.

    Mean and standard deviation come from the histogram; bins beyond ``mean +- z * std`` are emptied and the
    observed min / max shrink to the kept range, so no threshold search ever covers the outliers.
    """
    centres = stats.bin_centers()
    total = stats.counts.sum()
    if total <= 0:
        return stats
    mean = float(stats.counts @ centres / total)
    std = float(np.sqrt(stats.counts @ (centres - mean) ** 2 / total))
    if std == 0:
        return stats
    lo, hi = mean - z_threshold * std, mean + z_threshold * std
    keep = (centres >= lo) & (centres <= hi)
    if keep.all():
        return stats
    counts = np.where(keep, stats.counts, 0.0)
    return replace(
        stats, counts=counts, min=max(stats.min, lo), max=min(stats.max, hi), num_values=int(counts.sum())
    )
