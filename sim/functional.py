"""Functional check of the factorised (UCNN) dot product: evaluate a layer the way the PE does and
compare with the dense result. With integer weights and activations everything is int64, so the
comparison is bit-exact; the evaluation also counts its adds and products, which must equal the
counts model.
"""

from __future__ import annotations

import numpy as np

from .workload import Layer, WeightStats


def im2col(x: np.ndarray, layer: Layer) -> np.ndarray:
    """Windows of one conv group-free input ``x`` (C, H, W) -> (groups, N, K), K ordered (c, kh, kw)
    like a PyTorch weight's flattening. Zero padding; supports stride, padding and dilation."""
    c, h, w = x.shape
    if (c, h, w) != (layer.in_channels, layer.in_h, layer.in_w):
        raise ValueError(f"layer {layer.name!r}: input shape {x.shape} != (C, H, W) = "
                         f"({layer.in_channels}, {layer.in_h}, {layer.in_w})")
    xp = np.pad(x, ((0, 0), (layer.padding_h, layer.padding_h), (layer.padding_w, layer.padding_w)))
    oh, ow = layer.out_h, layer.out_w
    cols = np.empty((c, layer.kernel_h, layer.kernel_w, oh, ow), dtype=x.dtype)
    for i in range(layer.kernel_h):
        for j in range(layer.kernel_w):
            r0, c0 = i * layer.dilation_h, j * layer.dilation_w
            cols[:, i, j] = xp[:, r0:r0 + layer.stride_h * (oh - 1) + 1:layer.stride_h,
                               c0:c0 + layer.stride_w * (ow - 1) + 1:layer.stride_w]
    cg = c // layer.groups
    return cols.reshape(layer.groups, cg * layer.kernel_h * layer.kernel_w, oh * ow).transpose(0, 2, 1)


def dense_output(windows: np.ndarray, stats: WeightStats) -> np.ndarray:
    """Dense reference (groups, N, M_per_group) = windows @ W.T per group."""
    g = windows.shape[0]
    w = _weight_values(stats)[stats.codes].reshape(g, -1, stats.codes.shape[1])
    return np.einsum("gnk,gmk->gnm", windows, w)


def _weight_values(stats: WeightStats) -> np.ndarray:
    integral = np.all(stats.values == np.round(stats.values))
    return stats.values.astype(np.int64) if integral else stats.values


def factorised_output(windows: np.ndarray, stats: WeightStats, filters_per_block: int):
    """UCNN evaluation with activation-group reuse over G filters.

    Returns (output (groups, N, M_per_group), adds per output pixel, products per output pixel):
    sub-group sums over taps sharing a non-zero weight tuple, then per filter one product per distinct
    value of the sums of its sub-groups, then the sum of the products.
    """
    g_conv, n, k = windows.shape
    values = _weight_values(stats)
    per_group = stats.codes.shape[0] // g_conv
    out = np.zeros((g_conv, n, per_group), dtype=np.result_type(windows, values))
    adds = products = 0
    for grp in range(g_conv):
        codes = stats.codes[grp * per_group:(grp + 1) * per_group]
        for start in range(0, per_group, filters_per_block):
            block = codes[start:start + filters_per_block].astype(np.int64)
            block_out, a, p = _block(windows[grp], block, values, stats.zero_code)
            out[grp, :, start:start + block.shape[0]] = block_out
            adds, products = adds + a, products + p
    return out, adds, products


def _block(x: np.ndarray, block: np.ndarray, values: np.ndarray, zero_code: int):
    """One block of G filters (G, K) on windows x (N, K)."""
    nonzero_tap = np.any(block != zero_code, axis=0)
    taps = np.flatnonzero(nonzero_tap)
    out = np.zeros((x.shape[0], block.shape[0]), dtype=np.result_type(x, values))
    if taps.size == 0:
        return out, 0, 0
    tuples, sub_of_tap = np.unique(block[:, taps].T, axis=0, return_inverse=True)
    sub_of_tap = sub_of_tap.reshape(-1)
    order = np.argsort(sub_of_tap, kind="stable")
    starts = np.searchsorted(sub_of_tap[order], np.arange(len(tuples)))
    sub_sums = np.add.reduceat(x[:, taps[order]], starts, axis=1)  # (N, S)
    adds = taps.size - len(tuples)
    products = 0
    for f in range(block.shape[0]):
        members = np.flatnonzero(tuples[:, f] != zero_code)
        if members.size == 0:
            continue
        adds += members.size - 1
        for code in np.unique(tuples[members, f]):
            group = members[tuples[members, f] == code]
            out[:, f] += values[code] * sub_sums[:, group].sum(axis=1)
            products += 1
    return out, adds, products


def check_layer(layer: Layer, stats: WeightStats, filters_per_block: int = 1, seed: int = 0,
                activation_range: int = 128) -> dict:
    """Evaluate ``layer`` on random int8-range activations both ways.

    Returns {"max_abs_error", "exact", "adds_per_output", "products_per_output"}; ``exact`` is True
    when the factorised output equals the dense output element for element.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(-activation_range, activation_range, size=(layer.in_channels, layer.in_h, layer.in_w))
    windows = im2col(x.astype(np.int64), layer)
    if not np.issubdtype(_weight_values(stats).dtype, np.integer):
        windows = windows.astype(np.float64)
    ref = dense_output(windows, stats)
    got, adds, products = factorised_output(windows, stats, filters_per_block)
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    return {"max_abs_error": err, "exact": bool(np.array_equal(got, ref)), "adds_per_output": adds,
            "products_per_output": products}
