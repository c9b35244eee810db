import math

import numpy as np
import pytest
import yaml
from wfn_sim.arch import ArchConfig
from wfn_sim.counts import count_layer
from wfn_sim.energy import check_table, layer_energy, load_energy_table, table_path
from wfn_sim.synth import synthetic_stats
from wfn_sim.workload import Layer

LAYER = Layer("conv", "conv", 16, 16, 32, 48, 3, 3, 1, 1, 1, 1)
STATS = synthetic_stats(LAYER, 17, np.random.default_rng(0), 0.2)


def sram_pj_per_bit_by_hand(points, kb):
    """Log-log line through the two table points around ``kb`` (64 KB lies between 32 KB and 1 MB)."""
    (k0, e0), (k1, e1) = points
    return e0 * (kb / k0) ** (math.log(e1 / e0) / math.log(k1 / k0)) / 64


@pytest.mark.parametrize("design", ["dense_ws", "codebook", "shift_add", "factorised"])
def test_layer_energy_recomputed_by_hand_from_counts_and_yaml(design):
    raw = yaml.safe_load(open(table_path("horowitz45")))
    ev = {k: v["energy"] for k, v in raw["events"].items()}
    pts = [(p["kb"], p["energy"]) for p in raw["sram_read_64b"]]
    arch = ArchConfig()  # 8-bit acts/weights, 24-bit accumulators, 16-bit group sums, 64 KB SRAMs
    c = count_layer(LAYER, STATS, arch, design)
    sram = sram_pj_per_bit_by_hand([pts[1], pts[2]], 64)
    assert sram * 64 == pytest.approx(27.6, abs=0.05)  # the reference file's "64 KB ~ 27.6 pJ"
    product = {"dense_ws": ev["int8_mult"] * c["multiplies"], "codebook": ev["int8_mult"] * c["multiplies"],
               "shift_add": ev["int8_shift"] * c["shifts"], "factorised": ev["int16_mult"] * c["multiplies"]}[design]
    add = ev["int24_add"] * c["adds"]
    sram_bits = sum(c[f"{t}_sram_{rw}_bits"] for t in ("ifmap", "filter", "ofmap") for rw in ("read", "write"))
    dram_bits = c["ifmap_dram_read_bits"] + c["filter_dram_read_bits"] + c["ofmap_dram_write_bits"]
    by_hand = (product + add + ev["codebook_read"] * c["codebook_reads"] + ev["rf_per_bit"] * c["rf_read_bits"]
               + ev["array_hop_per_bit"] * c["array_hop_bits"] + sram * sram_bits + ev["dram_per_bit"] * dram_bits)
    e = layer_energy(c, arch, load_energy_table("horowitz45"), design)
    assert e["total_energy_pj"] == pytest.approx(by_hand, rel=1e-12)
    parts = e["compute_energy_pj"] + e["ifmap_energy_pj"] + e["filter_energy_pj"] + e["ofmap_energy_pj"]
    assert parts == pytest.approx(e["total_energy_pj"], rel=1e-12)


@pytest.mark.parametrize("name", ["horowitz45", "aladdin_cacti45", "eyeriss65_relative"])
def test_shipped_tables_price_every_design_and_cite_sources(name):
    table = load_energy_table(name)
    assert table.name == name
    check_table(table, ArchConfig(), ["dense_ws", "codebook", "shift_add", "factorised", "sparse_pe"])
    check_table(table, ArchConfig(factorised_product="shift_add"), ["factorised"])
    assert all(src.strip() for src in table.sources.values())


def test_sram_interpolation_hits_table_points():
    table = load_energy_table("aladdin_cacti45")
    assert table.sram_per_bit(8) * 64 == pytest.approx(6.137)
    assert table.sram_per_bit(128) * 64 == pytest.approx(32.286)
    assert 6.137 < table.sram_per_bit(16) * 64 < 17.042


def test_table_missing_an_event_is_named(tmp_path):
    raw = yaml.safe_load(open(table_path("horowitz45")))
    del raw["events"]["int8_shift"]
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(raw))
    table = load_energy_table(path)
    check_table(table, ArchConfig(), ["dense_ws"])
    with pytest.raises(ValueError, match="no event 'int8_shift' needed by design 'shift_add'"):
        check_table(table, ArchConfig(), ["dense_ws", "shift_add"])


def test_table_entry_without_source_is_rejected(tmp_path):
    path = tmp_path / "nosource.yaml"
    path.write_text("name: x\nunit: pJ\nevents:\n  int8_add: {energy: 0.03}\nsram_read_64b:\n"
                    "  - {kb: 8, energy: 10, source: s}\n")
    with pytest.raises(ValueError, match="event 'int8_add' must be {energy: NUMBER, source: TEXT}"):
        load_energy_table(path)


def test_unknown_table_name_is_reported():
    with pytest.raises(FileNotFoundError, match="energy table 'nope'"):
        load_energy_table("nope")
