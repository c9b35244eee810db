"""The dense array must reproduce SCALE-Sim v3.0.0 in every column of every golden file.

Goldens: tests/data/scalesim/golden_{ws,os,is}32.csv (18 layers, 32x32 array, 64 KB SRAMs) and
golden_{ws,os,is}_r16c48.csv (8 layers, 16x48 array, 8/4/6 KB SRAMs), made by make_goldens.sh from the
.cfg files next to them. The arch of each file is read from the same .cfg SCALE-Sim ran.
"""

import csv
from functools import cache
from pathlib import Path

import pytest
from wfn_sim.arch import load_arch
from wfn_sim.counts import count_layer
from wfn_sim.scalesim import GOLDEN_COLUMNS, arch_from_config, layer_report
from wfn_sim.workload import load_topology_csv

DATA = Path(__file__).parents[1] / "data" / "scalesim"
TOPOLOGY_COLUMNS = ["layer", "ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "num_filters", "stride"]
SETS = {f"{df}{suffix}": (f"golden_{df}{suffix}.csv", f"scalesim_{df}{suffix}.cfg", topo)
        for df in ("ws", "os", "is")
        for suffix, topo in (("32", "golden_layers.csv"), ("_r16c48", "golden_small_layers.csv"))}
EXPECTED_LAYERS = {"32": 18, "_r16c48": 8}


@cache
def golden(name):
    gold_file, cfg, topo = SETS[name]
    rows = list(csv.DictReader(open(DATA / gold_file)))
    return rows, load_topology_csv(DATA / topo), arch_from_config(DATA / cfg)


CASES = [(name, i) for name in SETS for i in range(len(golden(name)[0]))]


@pytest.mark.parametrize("name", list(SETS))
def test_golden_files_have_every_layer_and_only_known_columns(name):
    rows, workload, arch = golden(name)
    suffix = "32" if name.endswith("32") else "_r16c48"
    assert [r["layer"] for r in rows] == [ly.name for ly in workload.layers]
    assert len(rows) == EXPECTED_LAYERS[suffix]
    assert list(rows[0]) == TOPOLOGY_COLUMNS + list(GOLDEN_COLUMNS)  # every column is compared below
    assert arch.dataflow.startswith(name[:2])


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{golden(n)[0][i]['layer']}" for n, i in CASES])
def test_every_column_matches_scalesim(name, index):
    rows, workload, arch = golden(name)
    gold, layer = rows[index], workload.layers[index]
    ours = layer_report(layer, arch)
    for column in GOLDEN_COLUMNS:
        if column.endswith("_pct"):  # SCALE-Sim averages per-fold floats; ours are closed forms
            assert ours[column] == pytest.approx(float(gold[column]), rel=1e-12, abs=0), column
        else:
            assert ours[column] == float(gold[column]), column
            assert float(gold[column]).is_integer()


@pytest.mark.parametrize("name", list(SETS))
def test_result_rows_carry_the_scalesim_numbers(name):
    """count_layer (dense_ws, dram_model scalesim) gives the golden cycles, SRAM and DRAM words."""
    rows, workload, arch = golden(name)
    for gold, layer in list(zip(rows, workload.layers))[:6]:
        c = count_layer(layer, None, arch, "dense_ws")
        assert c["cycles"] == int(gold["total_cycles"])
        assert c["cycles_incl_prefetch"] == int(gold["total_cycles_incl_prefetch"])
        for field in ("ifmap_sram_reads", "filter_sram_reads", "ofmap_sram_writes", "ifmap_dram_reads",
                      "filter_dram_reads", "ofmap_dram_writes"):
            assert c[field] == int(gold[field]), field
        assert c["ifmap_dram_read_bits"] == int(gold["ifmap_dram_reads"]) * arch.act_bits


def test_shipped_ws32_config_is_the_golden_array():
    ours, golden_arch = load_arch("ws32"), golden("ws32")[2]
    for field in ("array_rows", "array_cols", "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb", "dataflow"):
        assert getattr(ours, field) == getattr(golden_arch, field), field


def test_resnet18_layers_in_goldens_have_pytorch_output_sizes():
    """The enlarged SCALE-Sim inputs give the same outputs as the padded PyTorch layers."""
    from wfn_sim.synth import resnet_layers

    ours = {(ly.gemm_n, ly.gemm_k, ly.out_channels) for ly in resnet_layers(18)}
    r18 = [ly for ly in golden("ws32")[1].layers if ly.name.startswith("r18_")]
    assert len(r18) == 12
    for layer in r18:
        assert (layer.gemm_n, layer.gemm_k, layer.out_channels) in ours, layer.name


def test_padded_pytorch_layer_equals_its_scalesim_topology():
    """A padded layer is reported as SCALE-Sim reports the enlarged input that gives its output size."""
    from wfn_sim.synth import resnet_layers

    arch = golden("ws32")[2]
    conv1 = resnet_layers(18)[0]
    gold = {r["layer"]: r for r in golden("ws32")[0]}["r18_conv1"]
    assert conv1.padding_h == 3 and not conv1.ceil_mode
    assert layer_report(conv1, arch)["ifmap_dram_reads"] == int(gold["ifmap_dram_reads"])
