import pytest
from wfn_sim.arch import ArchConfig, load_arch, parse_designs


def test_shipped_configs_load():
    assert load_arch("ws32") == ArchConfig()
    bw = load_arch("ws32_bw16")
    assert bw.dram_bandwidth_bytes_per_cycle == 16.0 and bw.activation_group_filters == 2


@pytest.mark.parametrize("field,value,match", [
    ("array_rows", 0, "ArchConfig.array_rows must be a positive integer"),
    ("ifmap_sram_kb", -64, "ArchConfig.ifmap_sram_kb must be a positive integer"),
    ("act_bits", 8.5, "ArchConfig.act_bits must be a positive integer"),
    ("dram_bandwidth_bytes_per_cycle", -1.0, "dram_bandwidth_bytes_per_cycle must be a number >= 0"),
    ("dataflow", "row_stationary", r"ArchConfig.dataflow must be one of \['ws_systolic', 'os_systolic', 'is_systolic'\]"),
    ("dram_model", "ramulator", r"ArchConfig.dram_model must be one of \['reuse', 'scalesim'\]"),
    ("codebook_scope", "filter", "ArchConfig.codebook_scope must be one of"),
    ("factorised_product", "lut", "ArchConfig.factorised_product must be one of"),
    ("spill_psums_per_row_fold", "yes", "spill_psums_per_row_fold must be true/false"),
])
def test_bad_fields_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        ArchConfig(**{field: value})


def test_unknown_yaml_field_is_named(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("array_rows: 16\narray_colums: 16\n")
    with pytest.raises(ValueError, match=r"unknown ArchConfig field\(s\) \['array_colums'\]"):
        load_arch(path)


def test_designs_parse_and_unknown_design_is_named():
    assert parse_designs("dense_ws, factorised") == ("dense_ws", "factorised")
    with pytest.raises(ValueError, match=r"unknown design\(s\) \['eyeriss'\]"):
        parse_designs("dense_ws,eyeriss")
    with pytest.raises(ValueError, match="comma-separated subset"):
        parse_designs("")
