"""Synthetic weights with a chosen number of unique values, and ResNet layer lists.

No pretrained weights can be downloaded here, so "real-sized" networks get Laplace-distributed weights
rounded onto a set of U integers on an 8-bit fixed-point grid (values in [-128, 127]). U = 3 gives
ternary {-1, 0, 1}; U = 17 the INQ-style powers of two {0, +-2^0..+-2^7}; other U the integers closest
to U equally spaced quantiles of the Laplace law. Integer values keep every functional check bit-exact.
"""

from __future__ import annotations

import numpy as np

from .workload import Layer, WeightStats, Workload

LAPLACE_SCALE = 24.0  # in units of the 8-bit grid: ~5 % of weights saturate at |w| = 127


def unique_value_set(unique_values: int) -> np.ndarray:
    """U distinct integers in [-128, 127] (sorted float64), including 0 when U is odd."""
    u = int(unique_values)
    if u < 2 or u > 256:
        raise ValueError(f"unique_values must be in [2, 256] (8-bit grid), got {unique_values!r}")
    if u == 3:
        return np.array([-1.0, 0.0, 1.0])
    if u == 17:
        pot = 2.0 ** np.arange(8)
        return np.concatenate([-pot[::-1], [0.0], pot])
    if u == 256:
        return np.arange(-128, 128, dtype=np.float64)
    q = (np.arange(u) + 0.5) / u
    quantiles = -LAPLACE_SCALE * np.sign(q - 0.5) * np.log(1 - 2 * np.abs(q - 0.5))
    chosen: list[int] = []
    for target in quantiles:  # nearest free integer, so the set has exactly U members
        order = np.argsort(np.abs(np.arange(-128, 128) - target), kind="stable")
        for cand in np.arange(-128, 128)[order]:
            if int(cand) not in chosen:
                chosen.append(int(cand))
                break
    return np.array(sorted(chosen), dtype=np.float64)


def synthetic_stats(layer: Layer, unique_values: int, rng: np.random.Generator,
                    zero_fraction: float = 0.0) -> WeightStats:
    """WeightStats of Laplace weights rounded to ``unique_value_set(unique_values)``.

    ``zero_fraction``: extra fraction of weights forced to 0 (pruning), on top of rounding.
    """
    values = unique_value_set(unique_values)
    shape = (layer.out_channels, layer.gemm_k)
    raw = rng.laplace(0.0, LAPLACE_SCALE, size=shape).astype(np.float32)
    mids = ((values[1:] + values[:-1]) / 2).astype(np.float32)
    codes = np.searchsorted(mids, raw).astype(np.int16)
    if zero_fraction > 0:
        zero = np.flatnonzero(values == 0.0)
        if zero.size == 0:
            raise ValueError(f"zero_fraction needs 0 among the {unique_values} values")
        codes[rng.random(shape) < zero_fraction] = zero[0]
    used = np.unique(codes)  # keep only values that occur, so codebook size is the layer's real U
    remap = np.full(values.size, -1, dtype=np.int16)
    remap[used] = np.arange(used.size)
    return WeightStats(remap[codes], values[used], layer.groups)


def with_synthetic_weights(workload: Workload, unique_values: int, seed: int = 0,
                           zero_fraction: float = 0.0) -> Workload:
    """Same layers as ``workload`` with synthetic weights of ``unique_values`` values per layer."""
    rng = np.random.default_rng(seed)
    stats = tuple(synthetic_stats(ly, unique_values, rng, zero_fraction) for ly in workload.layers)
    return Workload(f"{workload.name}_U{unique_values}", workload.layers, stats)


def _conv(name, hw, cin, cout, k, stride, pad) -> Layer:
    return Layer(name, "conv", hw, hw, cin, cout, k, k, stride, stride, pad, pad)


def resnet_layers(depth: int, image_size: int = 224, num_classes: int = 1000) -> tuple:
    """torchvision ResNet-18/34/50/101/152 conv and fc layers (batch 1), in forward order."""
    configs = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
               101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
    if depth not in configs:
        raise ValueError(f"resnet depth must be one of {sorted(configs)}, got {depth!r}")
    block, counts = configs[depth]
    expansion = 4 if block == "bottleneck" else 1
    layers = [_conv("conv1", image_size, 3, 64, 7, 2, 3)]
    hw = (image_size + 6 - 7) // 2 + 1
    hw = (hw + 2 - 3) // 2 + 1  # 3x3 stride-2 max pool
    cin = 64
    for stage, (n, width) in enumerate(zip(counts, (64, 128, 256, 512), strict=True), start=1):
        for b in range(n):
            stride = 2 if (b == 0 and stage > 1) else 1
            prefix = f"layer{stage}.{b}"
            out_hw = (hw - 1) // stride + 1
            if block == "basic":
                layers += [_conv(f"{prefix}.conv1", hw, cin, width, 3, stride, 1),
                           _conv(f"{prefix}.conv2", out_hw, width, width, 3, 1, 1)]
            else:  # torchvision v1.5: the stride sits on the 3x3 conv
                layers += [_conv(f"{prefix}.conv1", hw, cin, width, 1, 1, 0),
                           _conv(f"{prefix}.conv2", hw, width, width, 3, stride, 1),
                           _conv(f"{prefix}.conv3", out_hw, width, width * expansion, 1, 1, 0)]
            if b == 0 and (stride != 1 or cin != width * expansion):
                layers.append(_conv(f"{prefix}.downsample.0", hw, cin, width * expansion, 1, stride, 0))
            cin, hw = width * expansion, out_hw
    layers.append(Layer("fc", "linear", 1, 1, cin, num_classes))
    return tuple(layers)


def resnet_workload(depth: int, image_size: int = 224) -> Workload:
    """Shape-only ResNet workload."""
    layers = resnet_layers(depth, image_size)
    return Workload(f"resnet{depth}", layers, (None,) * len(layers))
