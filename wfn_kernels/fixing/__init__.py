"""Weight Fixing Networks (Subia-Waud & Dasmahapatra, ECCV 2022): the algorithm.

    from wfn_kernels.fixing import WFNConfig, fix_weights
    model, history = fix_weights(model, train_loader, val_loader, WFNConfig(relative_tolerance=0.01))
"""

from .clustering import ClusteringResult, cluster
from .config import PAPER_FIX_FRACTIONS, WFNConfig
from .metrics import network_metrics, tensor_metrics
from .regularizer import expected_distance
from .trainer import fix_weights

__all__ = ["PAPER_FIX_FRACTIONS", "ClusteringResult", "WFNConfig", "cluster", "expected_distance", "fix_weights",
           "network_metrics", "tensor_metrics"]
