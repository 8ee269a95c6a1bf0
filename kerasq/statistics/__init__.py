"""Statistics collection: run the float model over representative data, keep histograms and ranges."""

from kerasq.statistics.collector import collect_statistics
from kerasq.statistics.histogram import TensorStats, merge_batch, widen

__all__ = ["TensorStats", "collect_statistics", "merge_batch", "widen"]
