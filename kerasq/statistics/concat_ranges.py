"""Concatenations whose inputs have very different ranges (the troubleshooting guide's concat problem).

One grid serves every input of a concatenation on devices that concatenate in integers; an input whose range
is much smaller than another's then keeps only a few levels. Reported, not changed: the fix (rebalancing the
branches, moving the concat) is a model change.
"""

from __future__ import annotations

from kerasq.graph.model_graph import Graph
from kerasq.statistics.histogram import TensorStats

RATIO = 4.0


def concat_range_warnings(graph: Graph, stats: dict[int, TensorStats], ratio: float = RATIO) -> list[str]:
    """One message per concatenation whose input ranges (max |value|) differ by more than ``ratio``."""
    producers = graph.producers()
    warnings = []
    for node in graph.nodes:
        if node.kind != "concat":
            continue
        ranges = {}
        for tensor in dict.fromkeys(node.inputs):
            if tensor in stats:
                name = producers[tensor].name if tensor in producers else f"input {tensor}"
                ranges[name] = max(abs(stats[tensor].min), abs(stats[tensor].max))
        if len(ranges) < 2 or min(ranges.values()) <= 0:
            continue
        spread = max(ranges.values()) / min(ranges.values())
        if spread > ratio:
            listing = ", ".join(f"{name} max|x| {value:.3g}" for name, value in ranges.items())
            warnings.append(
                f"concat {node.name!r}: input ranges differ by {spread:.1f}x ({listing}); with one shared grid the "
                "small-range inputs keep few levels. Rebalance the branches (e.g. a scale) or move the concat."
            )
    return warnings
