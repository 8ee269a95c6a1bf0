"""Statistics collection: run the float model over representative data, keep histograms, ranges and means."""

from kerasq.statistics.collector import Observation, collect_statistics, observe
from kerasq.statistics.histogram import TensorStats, merge_batch, widen

__all__ = ["Observation", "TensorStats", "collect_statistics", "merge_batch", "observe", "widen"]
