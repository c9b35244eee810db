"""Accelergy interop: an ERT read as an energy table prices a run exactly as the same numbers in the
project's YAML; the action counts written for the run, priced by the ERT, give the same total."""

from pathlib import Path

import pytest
import yaml
from wfn_sim.accelergy import read_ert, write_action_counts
from wfn_sim.arch import ArchConfig
from wfn_sim.energy import load_energy_table, required_events
from wfn_sim.report import write_all
from wfn_sim.simulate import simulate
from wfn_sim.synth import with_synthetic_weights
from wfn_sim.workload import load_topology_csv

DATA = Path(__file__).parents[1] / "data"
ERT_DIR = DATA / "accelergy"
DESIGNS = ("dense_ws", "codebook", "shift_add", "factorised", "sparse_pe")
WORKLOAD = with_synthetic_weights(load_topology_csv(DATA / "scalesim" / "golden_small_layers.csv"), 17, seed=1)


def test_ert_binding_gives_per_action_and_per_bit_energies_with_sources():
    table = load_energy_table(ERT_DIR / "ws32_ert.yaml")
    assert table.name == "ws32_ert" and table.unit == "pJ"
    assert table.events["int8_mult"] == 0.2
    assert table.events["ifmap_sram_read_per_bit"] == pytest.approx(27.6 / 64)  # the argument set bound
    assert table.dram("read") == 20.0 and table.dram("write") == 24.0  # distinct read and write energies
    assert table.sram("ofmap", "write", 64) == pytest.approx(35.0 / 64)
    assert table.sources["rf_per_bit"] == "Accelergy ERT ERT.yaml: system.PE[0..1023].regfile.read / 16 b"


@pytest.mark.parametrize("dataflow,designs", [("ws_systolic", DESIGNS), ("os_systolic", DESIGNS[:3]),
                                              ("is_systolic", DESIGNS[:3])])
def test_run_priced_with_ert_equals_same_numbers_in_project_yaml(dataflow, designs):
    arch = ArchConfig(dataflow=dataflow)
    ert = simulate(WORKLOAD, arch, designs, load_energy_table(ERT_DIR / "ws32_ert.yaml"))
    ours = simulate(WORKLOAD, arch, designs, load_energy_table(ERT_DIR / "ws32_same_numbers.yaml"))
    for design in designs:
        total = ours.totals[design]["total_energy_pj"]
        assert total > 0
        assert ert.totals[design]["total_energy_pj"] == pytest.approx(total, rel=1e-12), design
        for part in ("ifmap_sram_energy_pj", "ofmap_dram_energy_pj", "mult_energy_pj", "shift_energy_pj"):
            assert ert.totals[design][part] == pytest.approx(ours.totals[design][part], rel=1e-12), part


def test_writes_priced_apart_from_reads():
    """With writes priced as reads the ofmap energy drops: the read/write split is used."""
    raw = yaml.safe_load(open(ERT_DIR / "ws32_same_numbers.yaml"))
    flat = dict(raw, name="flat", events={k: v for k, v in raw["events"].items() if "write" not in k})
    flat["events"]["dram_write_per_bit"] = raw["events"]["dram_read_per_bit"]
    for t in ("ifmap", "filter", "ofmap"):
        flat["events"][f"{t}_sram_write_per_bit"] = raw["events"][f"{t}_sram_read_per_bit"]
    flat_table = load_energy_table(_tmp_yaml(flat))
    split = simulate(WORKLOAD, ArchConfig(), ("dense_ws",), load_energy_table(ERT_DIR / "ws32_same_numbers.yaml"))
    same = simulate(WORKLOAD, ArchConfig(), ("dense_ws",), flat_table)
    assert split.totals["dense_ws"]["ofmap_energy_pj"] > same.totals["dense_ws"]["ofmap_energy_pj"]
    assert split.totals["dense_ws"]["compute_energy_pj"] == same.totals["dense_ws"]["compute_energy_pj"]


def _tmp_yaml(doc, _counter=[0]):
    import tempfile

    _counter[0] += 1
    path = Path(tempfile.mkdtemp()) / f"t{_counter[0]}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _price_action_counts(path, ert):
    doc = yaml.safe_load(open(path))["action_counts"]
    assert doc["version"] == 0.3
    total = 0.0
    for comp in doc["local"]:
        for entry in comp["action_counts"]:
            energies = [e for args, e in ert[comp["name"]][entry["name"]] if args == entry.get("arguments", {})]
            assert len(energies) == 1, (comp["name"], entry)
            total += entry["counts"] * energies[0]
    return total


@pytest.mark.parametrize("design", DESIGNS)
def test_action_counts_priced_by_the_ert_give_the_run_total(tmp_path, design):
    table = load_energy_table(ERT_DIR / "ws32_ert.yaml")
    result = simulate(WORKLOAD, ArchConfig(), (design,), table)
    (path,) = write_action_counts(result, tmp_path, table, required_events)
    assert path.name == f"action_counts_{design}.yaml"
    priced = _price_action_counts(path, read_ert(ERT_DIR / "ERT.yaml"))
    assert priced == pytest.approx(result.totals[design]["total_energy_pj"], rel=1e-12)


def test_write_all_writes_action_counts_for_every_design_with_default_components(tmp_path):
    result = simulate(WORKLOAD, ArchConfig(), ("dense_ws", "codebook"))  # horowitz45, no ERT binding
    paths = write_all(result, tmp_path, plots=False)
    names = {p.name for p in paths}
    assert {"action_counts_dense_ws.yaml", "action_counts_codebook.yaml"} <= names
    doc = yaml.safe_load(open(tmp_path / "action_counts_dense_ws.yaml"))["action_counts"]
    counts = {(c["name"], a["name"]): a["counts"] for c in doc["local"] for a in c["action_counts"]}
    assert counts[("ws32.int8_mult", "multiply")] == result.totals["dense_ws"]["multiplies"]
    assert counts[("ws32.dram_per_bit", "access")] == (result.totals["dense_ws"]["ifmap_dram_read_bits"]
                                                       + result.totals["dense_ws"]["filter_dram_read_bits"]
                                                       + result.totals["dense_ws"]["ofmap_dram_write_bits"])


def test_v02_layout_reads_the_same_entries():
    v02, v03 = read_ert(ERT_DIR / "ERT_v02.yaml"), read_ert(ERT_DIR / "ERT.yaml")
    assert v02["system.ifmap_sram"]["read"] == v03["system.ifmap_sram"]["read"]
    assert v02["system.DRAM"] == v03["system.DRAM"]


@pytest.mark.parametrize("bind,match", [
    ({"ifmap_sram_read_per_bit": {"component": "ifmap_sram", "action": "read", "bits": 64}},
     r"system.ifmap_sram.read has 2 argument sets .*name one with 'arguments'"),
    ({"int8_mult": {"component": "tensor_core", "action": "multiply"}},
     r"component 'tensor_core' must name exactly one ERT component \(none\)"),
    ({"int8_mult": {"component": "multiplier", "action": "mac"}},
     r"has no action 'mac'; it has \['idle', 'multiply'\]"),
    ({"dram_read_per_bit": {"component": "DRAM", "action": "read"}}, "is priced per bit: give 'bits'"),
    ({"int8_mult": {"component": "multiplier"}}, r"bind.int8_mult must be \{component, action"),
])
def test_bad_bindings_are_named(bind, match):
    doc = {"name": "bad", "unit": "pJ", "accelergy_ert": str(ERT_DIR / "ERT.yaml"), "bind": bind}
    with pytest.raises(ValueError, match=match):
        load_energy_table(_tmp_yaml(doc))


def test_not_an_ert_is_rejected():
    with pytest.raises(ValueError, match="an Accelergy ERT is a mapping 'ERT: {version, tables}'"):
        read_ert({"tables": []})
