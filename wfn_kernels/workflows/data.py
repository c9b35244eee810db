"""Small real datasets, read from local files only (nothing is downloaded).

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), the embedded
  default for the demo and fast tests. Images are scaled to [0, 1] and shaped (1, 8, 8).
- ``fashion-mnist``: the idx files of Debian's ``dataset-fashion-mnist`` package (see fashion_mnist()).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .._optional import require
DATASETS = ("digits", "fashion-mnist")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Split:
    """Tensors of one dataset split: images float32 (n, 1, H, W) in [0, 1], labels int64 (n,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        g = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=batch_size, shuffle=shuffle,
                          generator=g)


def digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's bundled digits as (train, test), split with a fixed permutation."""
    # scikit-learn ships the data file; nothing else has it
    bunch = require("sklearn.datasets", "the digits dataset").load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return Split(x[train], y[train]), Split(x[test], y[test])


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally .gz): big-endian magic (0, 0, dtype, ndim), dims, then data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset != count:
        raise ValueError(f"{path}: header says {dims} ({count} bytes) but the file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Fashion-MNIST (60k train, 10k test, 28x28) from idx files in ``data_dir`` (default: Debian's)."""
    root = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST directory {root} does not exist; install Debian's "
                                "dataset-fashion-mnist package or pass --data-dir")
    splits = []
    for prefix in ("train", "t10k"):
        images = _find(root, f"{prefix}-images-idx3-ubyte")
        labels = _find(root, f"{prefix}-labels-idx1-ubyte")
        x = torch.from_numpy(read_idx(images).copy()).float().unsqueeze(1) / 255.0
        y = torch.from_numpy(read_idx(labels).astype(np.int64))
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{images} has {x.shape[0]} images but {labels} has {y.shape[0]} labels")
        splits.append(Split(x, y))
    return splits[0], splits[1]


def validation_split(train: Split, fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """Hold out ``fraction`` of a training split (fixed permutation) as validation: (train, val).

    WFN's original held out 10 % of the training data (90/10 random_split) and reported the test set.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}")
    n = len(train.labels)
    n_val = int(round(n * fraction))
    if n_val == 0 or n_val == n:
        raise ValueError(f"validation fraction {fraction} of {n} samples leaves an empty split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, rest = perm[:n_val], perm[n_val:]
    return Split(train.images[rest], train.labels[rest]), Split(train.images[val], train.labels[val])


def load(name: str, data_dir=None) -> tuple[Split, Split]:
    """(train, test) of a named dataset: 'digits' or 'fashion-mnist'."""
    if name == "digits":
        return digits()
    if name == "fashion-mnist":
        return fashion_mnist(data_dir)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root} has no {stem}[.gz]; is this a Fashion-MNIST idx directory?")
