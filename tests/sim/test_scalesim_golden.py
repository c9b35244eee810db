"""dense_ws must reproduce SCALE-Sim v3.0.0 (tests/data/scalesim/golden_ws32.csv, made by make_goldens.sh)."""

import csv
from pathlib import Path

import pytest
from wfn_sim.arch import load_arch
from wfn_sim.counts import count_layer
from wfn_sim.workload import load_topology_csv

DATA = Path(__file__).parents[1] / "data" / "scalesim"
GOLDEN = list(csv.DictReader(open(DATA / "golden_ws32.csv")))
WORKLOAD = load_topology_csv(DATA / "golden_layers.csv")
INT_FIELDS = {"total_cycles": "compute_cycles", "stall_cycles": "stall_cycles",
              "ifmap_sram_reads": "ifmap_sram_reads", "filter_sram_reads": "filter_sram_reads",
              "ofmap_sram_writes": "ofmap_sram_writes"}
PCT_FIELDS = {"overall_util_pct": "overall_util_pct", "mapping_efficiency_pct": "mapping_efficiency_pct",
              "compute_util_pct": "compute_util_pct"}


def test_golden_set_covers_resnet18_and_odd_shapes():
    names = [row["layer"] for row in GOLDEN]
    assert len(names) == len(WORKLOAD.layers) == 16
    assert sum(n.startswith("r18_") for n in names) == 12


@pytest.mark.parametrize("index", range(len(GOLDEN)), ids=[row["layer"] for row in GOLDEN])
def test_dense_ws_matches_scalesim(index):
    gold, layer = GOLDEN[index], WORKLOAD.layers[index]
    assert layer.name == gold["layer"]
    counts = count_layer(layer, None, load_arch("ws32"), "dense_ws")
    for gold_field, ours in INT_FIELDS.items():
        assert counts[ours] == int(gold[gold_field]), gold_field
    # SCALE-Sim averages per-fold floats; our closed forms differ only in summation order
    for gold_field, ours in PCT_FIELDS.items():
        assert counts[ours] == pytest.approx(float(gold[gold_field]), rel=1e-12, abs=0), gold_field


def test_resnet18_layers_in_goldens_have_pytorch_output_sizes():
    """The enlarged SCALE-Sim inputs give the same outputs as the padded PyTorch layers."""
    from wfn_sim.synth import resnet_layers

    ours = {(ly.gemm_n, ly.gemm_k, ly.out_channels) for ly in resnet_layers(18)}
    for layer in WORKLOAD.layers:
        if layer.name.startswith("r18_"):
            assert (layer.gemm_n, layer.gemm_k, layer.out_channels) in ours, layer.name
