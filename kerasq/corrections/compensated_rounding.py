"""Error-compensating rounding of low-bit kernels: the math (numpy, no Keras).

Rounding every kernel value to its nearest level treats the errors of a layer's weights as independent, but
a layer's inputs are correlated, so the errors add up in its outputs. Processing the input rows of a kernel
one at a time, each row is rounded and its error is spread over the rows not rounded yet, in proportion to
the inverse of ``H = E[x x^T]`` of the layer's input rows; this greedily minimizes ``E ||(W - Q) x||^2``
(Frantar et al., "OPTQ: Accurate Quantization for Generative Pre-trained Transformers", ICLR 2023, building on
Optimal Brain Surgeon). The grids (scales, zero points) stay those the threshold search chose; only the level
each value takes changes, so the result is a kernel on the same grid.

Kernels are handled as ``[groups, rows, columns]`` matrices: a dense or convolution kernel is one group whose
rows are its input positions times input channels (the order of an input patch) and whose columns are its
output channels; a depthwise kernel is one group per input channel (rows: kernel positions, columns: the
depth multiplier), since each channel only sees its own inputs.
"""

from __future__ import annotations

import numpy as np

DAMPING = 0.01  # of the mean diagonal of H, added to it: keeps H invertible where inputs are collinear
BLOCK = 128  # rows rounded between two full updates of the remaining rows (the result does not depend on it)


def kernel_matrix(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """``kernel`` ([*spatial, in, out] or dense [in, out]) as ``[groups, rows, columns]``."""
    if depthwise:  # [*spatial, channels, multiplier] -> [channels, spatial, multiplier]
        spatial = int(np.prod(kernel.shape[:-2]))
        return np.moveaxis(kernel.reshape(spatial, kernel.shape[-2], kernel.shape[-1]), 1, 0)
    return kernel.reshape(1, -1, kernel.shape[-1])


def matrix_kernel(matrix: np.ndarray, shape: tuple[int, ...], depthwise: bool) -> np.ndarray:
    """The inverse of ``kernel_matrix``: ``[groups, rows, columns]`` back to a kernel of ``shape``."""
    if depthwise:
        return np.moveaxis(matrix, 0, 1).reshape(shape)
    return matrix.reshape(shape)


def patch_rows(
    x: np.ndarray,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: str,
    count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``count`` input patches of a channels-last convolution, at output positions drawn at random.

    ``x``: ``[batch, *spatial, channels]``; ``padding``: "valid", "same" (TensorFlow's: the extra pad after)
    or "causal" (1-D, all before). Returns ``[count, prod(kernel_size) * channels]`` in the order a kernel's
    ``[*kernel_size, channels]`` flattens to, or fewer rows when there are fewer positions.
    """
    spatial = x.shape[1:-1]
    pads, out = [], []
    for n, k, s, d in zip(spatial, kernel_size, strides, dilation, strict=True):
        span = (k - 1) * d + 1
        if padding == "valid":
            o, total = (n - span) // s + 1, 0
        else:
            o = -(-n // s)
            total = max((o - 1) * s + span - n, 0)
        before = total if padding == "causal" else total // 2
        pads.append((before, total - before))
        out.append(o)
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    positions = len(x) * int(np.prod(out))
    picked = rng.choice(positions, size=min(count, positions), replace=False)
    index = np.unravel_index(picked, (len(x), *out))
    offsets = np.stack(  # [prod(kernel_size), rank]: every tap of the kernel, in C order
        np.meshgrid(*[np.arange(k) * d for k, d in zip(kernel_size, dilation, strict=True)], indexing="ij"),
        -1,
    ).reshape(-1, len(kernel_size))
    coords = [
        (index[1 + a] * s)[:, None] + offsets[None, :, a] for a, s in enumerate(strides)
    ]  # each [count, taps]
    patches = x[(index[0][:, None], *coords)]  # [count, taps, channels]
    return patches.reshape(len(picked), -1)


def input_gram(rows: np.ndarray, groups: int) -> np.ndarray:
    """``sum x x^T`` over ``rows`` ([n, taps * channels] patches, or dense inputs [n, features]), per group:
    one ``[taps*channels]^2`` matrix, or for a depthwise kernel (``groups`` = channels) one ``[taps]^2`` per
    channel. ``[groups, d, d]``, float64 (the products are summed in float32, as a layer's own are)."""
    rows = np.asarray(rows, np.float32)
    if groups == 1:
        return (rows.T @ rows).astype(np.float64)[None]
    per_channel = rows.reshape(len(rows), -1, groups)  # [n, taps, channels]
    return np.einsum("nkc,nlc->ckl", per_channel, per_channel).astype(np.float64)


def _upper_inverse_factor(h: np.ndarray) -> np.ndarray:
    """Per group, the upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), damping more if needed."""
    diagonal = np.einsum("gii->gi", h)
    dead = diagonal <= 0  # inputs always zero: their rows never matter, keep H invertible
    h = h.copy()
    h[np.nonzero(dead)[0], np.nonzero(dead)[1], np.nonzero(dead)[1]] = 1.0
    mean = np.maximum(np.einsum("gii->gi", h).mean(axis=1), 1e-30)
    eye = np.eye(h.shape[-1])
    for damping in (DAMPING, 0.1, 1.0):
        try:
            inverse = np.linalg.inv(h + damping * mean[:, None, None] * eye)
            return np.swapaxes(np.linalg.cholesky(inverse), -1, -2)
        except np.linalg.LinAlgError:
            continue
    return np.broadcast_to(eye, h.shape).copy() * (1.0 / np.sqrt(mean))[:, None, None]  # plain rounding


def _round_to_grid(
    w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int
) -> np.ndarray:
    return (np.clip(np.round(w / scale + zero_point), qmin, qmax) - zero_point) * scale


def compensated_rounding(
    w: np.ndarray,
    h: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
) -> np.ndarray:
    """``w`` (``[groups, rows, columns]``) on its grid, rows rounded in order of decreasing ``H`` diagonal,
    each one's error compensated on the rows after it.

    ``h``: ``[groups, rows, rows]`` (``input_gram``); ``scale`` / ``zero_point``: broadcastable to ``w`` (one
    per column for per-channel grids). Returns the dequantized kernel values, every one a level of the grid.

    The compensation is greedy, so on a few columns it can end above rounding to nearest (about 2% of columns on
    random correlated inputs); those columns keep nearest rounding, so no column's output error
    ``(w - q)^T H (w - q)`` exceeds nearest rounding's.
    """
    w = np.asarray(w, np.float64)
    compensated = _compensated(w, h, scale, zero_point, qmin, qmax)
    full_scale = np.broadcast_to(np.asarray(scale, np.float64), w.shape)
    nearest = _round_to_grid(
        w, full_scale, np.broadcast_to(np.asarray(zero_point, np.float64), w.shape), qmin, qmax
    )
    worse = _output_error(w, compensated, h) > _output_error(w, nearest, h)  # [groups, columns]
    return np.where(worse[:, None, :], nearest, compensated)


def _output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``(w - q)^T H (w - q)`` per group and column: the output error of ``q`` in place of ``w``."""
    e = w - q
    return np.einsum("grc,grs,gsc->gc", e, h, e)


def _compensated(
    w: np.ndarray, h: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int
) -> np.ndarray:
    """The greedy pass of ``compensated_rounding``: rows in order of decreasing ``H`` diagonal, each one's
    rounding error spread on the rows after it."""
    scale = np.broadcast_to(np.asarray(scale, np.float64), w.shape)
    zero_point = np.broadcast_to(np.asarray(zero_point, np.float64), w.shape)
    order = np.argsort(-np.einsum("gii->gi", h), axis=1, kind="stable")  # most active inputs first
    g = np.arange(len(w))[:, None]
    w, scale, zero_point = w[g, order], scale[g, order], zero_point[g, order]
    u = _upper_inverse_factor(h[g[:, :, None], order[:, :, None], order[:, None, :]])
    q = np.empty_like(w)
    rows = w.shape[1]
    for start in range(0, rows, BLOCK):
        stop = min(start + BLOCK, rows)
        block = w[:, start:stop].copy()
        errors = np.empty_like(block)
        for i in range(stop - start):
            r = start + i
            q[:, r] = _round_to_grid(block[:, i], scale[:, r], zero_point[:, r], qmin, qmax)
            errors[:, i] = (block[:, i] - q[:, r]) / u[:, r, r, None]
            block[:, i:] -= u[:, r, r:stop, None] * errors[:, i, None, :]
        w[:, stop:] -= np.einsum("gbr,gbc->grc", u[:, start:stop, stop:], errors)
    restored = np.empty_like(q)
    restored[g, order] = q
    return restored
