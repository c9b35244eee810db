"""Weight Fixing Networks (Subia-Waud & Dasmahapatra, ECCV 2022): the algorithm (docs/algorithm.md).

    from wfn_kernels.fixing import WFNConfig, fix_weights
    model, history = fix_weights(model, train_loader, val_loader, WFNConfig(relative_tolerance=0.01))

- ``config.py``: every constant as a validated ``WFNConfig`` field (defaults: the authors' configuration).
- ``candidates.py``, ``pool.py``, ``clustering.py``: the candidate grid, additive powers of two and the
  greedy whole-network clustering (one fixing step).
- ``regularizer.py``: the "cosying up to clusters" loss. ``trainer.py``: ``fix_weights`` (the loop, masked
  updates, checkpoints, DDP). ``checkpoint.py``, ``params.py``: resumable state, tracked parameters.
  ``loaders.py``: (inputs, labels) batches of any loader on the model's device (CPU or CUDA, no autocast).
- ``metrics.py``: unique values and entropy over a named parameter set. ``baselines/``: APoT and uniform
  per-channel quantisation.

May import: ``wfn_kernels.format`` and the leaf helpers (``_optional``). Never nn, ops or workflows:
fixing works on plain float models.
"""

from .clustering import ClusteringResult, cluster
from .config import PAPER_FIX_FRACTIONS, WFNConfig
from .metrics import network_metrics, tensor_metrics
from .regularizer import expected_distance
from .trainer import fix_weights

__all__ = ["PAPER_FIX_FRACTIONS", "ClusteringResult", "WFNConfig", "cluster", "expected_distance", "fix_weights",
           "network_metrics", "tensor_metrics"]
