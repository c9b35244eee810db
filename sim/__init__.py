"""wfn_sim: a weight-reuse accelerator simulator (counts first, then a swappable energy table).

Quick use (no torch needed)::

    from wfn_sim import ArchConfig, resnet_workload, with_synthetic_weights, simulate
    result = simulate(with_synthetic_weights(resnet_workload(50), 17), ArchConfig(),
                      ("dense_ws", "codebook", "shift_add", "factorised"))
    result.totals["factorised"]["total_energy_pj"]

From a torch model (imports torch lazily): ``wfn_sim.extract.extract_workload(model, (1, 3, 224, 224))``.

Needs numpy (and pyyaml for its YAML configs); of wfn_kernels only the packed-file interface
``wfn_kernels.format.container``, to read packed models (docs/simulator.md, docs/design.md).
"""

from .arch import DEFAULT_DESIGNS, DESIGNS, ArchConfig, load_arch, parse_designs
from .counts import COUNT_FIELDS, count_layer, count_workload
from .energy import ENERGY_FIELDS, load_energy_table
from .simulate import ROW_FIELDS, SimResult, simulate
from .sweep import unique_weight_sweep
from .synth import resnet_layers, resnet_workload, with_synthetic_weights
from .workload import Layer, WeightStats, Workload, load_topology_csv

__all__ = ["DEFAULT_DESIGNS", "DESIGNS", "ArchConfig", "load_arch", "parse_designs", "COUNT_FIELDS", "count_layer",
           "count_workload", "ENERGY_FIELDS", "load_energy_table", "ROW_FIELDS", "SimResult", "simulate",
           "unique_weight_sweep", "resnet_layers", "resnet_workload", "with_synthetic_weights", "Layer",
           "WeightStats", "Workload", "load_topology_csv"]
