"""Error-compensating rounding as a PTQ stage: low-bit kernels rounded with their layers' input statistics.

For every conv / depthwise / dense kernel quantized to at most ``MAX_BITS`` bits, ``sum x x^T`` of the
layer's float input rows (patches, for convolutions) is accumulated over the calibration data, and the kernel
is rounded onto its grid by ``compensated_rounding`` instead of to the nearest level. The statistics are
gathered once, on the first request, and the rounded kernels are cached per layer and width, so mixed
precision's repeated finishes cost one pass. 8-bit kernels keep nearest rounding (their rounding error is
already small next to the activations'); so do shared layers (one kernel serves several inputs), grouped and
channels-first convolutions, grids that round ties their own way, and kernels with more than ``MAX_ROWS``
rows (a VGG16 classifier's 25,088: its statistics alone would take 5 GB).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from kerasq.builder import build_model
from kerasq.corrections.compensated_rounding import (
    compensated_rounding,
    input_gram,
    kernel_matrix,
    matrix_kernel,
    patch_rows,
)
from kerasq.data import RepresentativeData
from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.weights import named_weights
from kerasq.plan import QuantizationParams
from kerasq.quantizers.grid import HALF_TO_EVEN, QuantParams
from kerasq.quantizers.weighted_kinds import kinds_with

COMPENSATED_KINDS = kinds_with("compensated_rounding")
MAX_BITS = 7  # kernels of at most this many bits are compensated
MAX_ROWS = 8192  # kernel rows (inputs per output) beyond which the d x d statistics cost too much memory
ROWS = 4096  # input rows per layer kept for its statistics (at least 4 per kernel row), drawn at random
SEED = 0


def compensable(graph: Graph) -> list[Node]:
    """The nodes whose kernels this stage can round: channels-last, ungrouped, not shared."""
    shared = graph.shared_operations()
    picked = []
    for node in graph.nodes:
        config = node.layer_config if node.kind in COMPENSATED_KINDS else {}
        if (
            node.kind in COMPENSATED_KINDS
            and node.float_reason is None
            and id(node.op) not in shared
            and config.get("data_format", "channels_last") == "channels_last"
            and config.get("groups", 1) == 1
            and _kernel_rows(node) <= MAX_ROWS
        ):
            picked.append(node)
    return picked


def _kernel_rows(node: Node) -> int:
    """Rows of the node's kernel as ``kernel_matrix`` lays it out (a depthwise kernel's per channel)."""
    shape = named_weights(node)["kernel"].shape
    return int(np.prod(shape[:-2])) if node.kind == "depthwise_conv" else int(np.prod(shape[:-1]))


def _rows(node: Node, x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` input rows of ``node`` in its kernel's row order (patches for convolutions)."""
    if node.kind == "dense":
        flat = x.reshape(-1, x.shape[-1])
        return flat[rng.choice(len(flat), size=min(count, len(flat)), replace=False)]
    config = node.layer_config
    rank = x.ndim - 2
    kernel_size = tuple(np.broadcast_to(config["kernel_size"], rank).tolist())
    strides = tuple(np.broadcast_to(config.get("strides", 1), rank).tolist())
    dilation = tuple(np.broadcast_to(config.get("dilation_rate", 1), rank).tolist())
    return patch_rows(x, kernel_size, strides, dilation, config.get("padding", "valid"), count, rng)


def _groups(node: Node, kernel: np.ndarray) -> int:
    return kernel.shape[-2] if node.kind == "depthwise_conv" else 1


def input_grams(
    graph: Graph, nodes: list[Node], data: RepresentativeData, rows: int | None = None
) -> dict[str, np.ndarray]:
    """Node name -> ``sum x x^T`` of its float input rows (``[groups, d, d]``) over ``data``; ``rows`` per
    node (default ``ROWS``), spread evenly over the batches."""
    rows = ROWS if rows is None else rows
    built = build_model(graph)
    probe = keras.Model(built.model.inputs, [built.tensors[n.inputs[0]] for n in nodes])
    batches = data.expected_batches() or data.num_batches()
    kernels = {n.name: named_weights(n)["kernel"] for n in nodes}
    per_batch = {
        n.name: math.ceil(max(rows, 4 * kernel_matrix(kernels[n.name], n.kind == "depthwise_conv").shape[1])
                          / batches)
        for n in nodes
    }  # fmt: skip
    rng = np.random.default_rng(SEED)
    grams: dict[str, np.ndarray] = {}
    for batch in data:
        outputs = probe(batch, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for node, x in zip(nodes, outputs, strict=True):
            rows_ = _rows(node, keras.ops.convert_to_numpy(x), per_batch[node.name], rng)
            gram = input_gram(rows_, _groups(node, kernels[node.name]))
            grams[node.name] = grams[node.name] + gram if node.name in grams else gram
    return grams


def compensated_kernel(node: Node, gram: np.ndarray, grid: QuantParams) -> np.ndarray:
    """``node``'s kernel on ``grid``, rounded by ``compensated_rounding`` with its input statistics."""
    kernel = named_weights(node)["kernel"]
    depthwise = node.kind == "depthwise_conv"
    shape = grid.broadcast_shape(kernel.shape)
    scale = np.broadcast_to(grid.scale.astype(np.float64).reshape(shape), kernel.shape)
    zero_point = np.broadcast_to(grid.zero_point.astype(np.float64).reshape(shape), kernel.shape)
    rounded = compensated_rounding(
        kernel_matrix(kernel.astype(np.float64), depthwise), gram,
        kernel_matrix(scale, depthwise), kernel_matrix(zero_point, depthwise), grid.qmin, grid.qmax,
    )  # fmt: skip
    return matrix_kernel(rounded, kernel.shape, depthwise).astype(np.float32)


class KernelCompensation:
    """The compensated kernels of one prepared graph, for any set of grids (statistics computed once)."""

    def __init__(self, graph: Graph, data: RepresentativeData, max_bits: int = MAX_BITS) -> None:
        self.graph, self.data, self.max_bits = graph, data, max_bits
        self._nodes = {n.name: n for n in compensable(graph)}
        self._grams: dict[str, np.ndarray] = {}
        self._kernels: dict[tuple[str, bytes], np.ndarray] = {}

    def _wanted(self, params: QuantizationParams) -> dict[str, QuantParams]:
        wanted = {}
        for name, grids in params.weights.items():
            grid = grids.get("kernel")
            if (
                name in self._nodes
                and grid is not None
                and grid.n_bits <= self.max_bits
                and grid.rounding == HALF_TO_EVEN
            ):
                wanted[name] = grid
        return wanted

    def kernels(self, params: QuantizationParams) -> dict[str, np.ndarray]:
        """Node name -> its compensated kernel, for each compensable kernel of ``params`` at <= max_bits."""
        wanted = self._wanted(params)
        missing = [self._nodes[n] for n in wanted if n not in self._grams]
        if missing:
            self._grams.update(input_grams(self.graph, missing, self.data))
        result = {}
        for name, grid in wanted.items():
            key = (name, grid.scale.tobytes() + grid.zero_point.tobytes() + bytes([grid.n_bits]))
            if key not in self._kernels:
                self._kernels[key] = compensated_kernel(self._nodes[name], self._grams[name], grid)
            result[name] = self._kernels[key]
        return result
