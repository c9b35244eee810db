"""Run SCALE-Sim v3.0.0 on each layer of a SCALE-Sim topology CSV and write one golden row per layer.

Run with the Python of a separate virtual environment that has `scalesim==3.0.0 "numpy<2.3"` (see
make_goldens.sh); never imported by the package or the tests. Each layer is simulated on its own
(one-row topology) so its wall time can be measured; the golden file holds only SCALE-Sim's outputs
(COMPUTE_REPORT and DETAILED_ACCESS_REPORT columns), the wall times go to TIMES_CSV when given.

Usage: python run_scalesim.py CONFIG TOPOLOGY_CSV OUT_CSV [TIMES_CSV]
"""

import csv
import os
import sys
import tempfile
import time

from scalesim.scale_sim import scalesim

COMPUTE = ["total_cycles_incl_prefetch", "total_cycles", "stall_cycles", "overall_util_pct",
           "mapping_efficiency_pct", "compute_util_pct"]
DETAIL = ["ifmap_sram_start", "ifmap_sram_stop", "ifmap_sram_reads", "filter_sram_start",
          "filter_sram_stop", "filter_sram_reads", "ofmap_sram_start", "ofmap_sram_stop",
          "ofmap_sram_writes", "ifmap_dram_start", "ifmap_dram_stop", "ifmap_dram_reads",
          "filter_dram_start", "filter_dram_stop", "filter_dram_reads", "ofmap_dram_start",
          "ofmap_dram_stop", "ofmap_dram_writes"]


def report_row(path):
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    return [x.strip() for x in lines[1].split(",")][1:]


def run_layer(config, header, row, workdir):
    topo = os.path.join(workdir, row[0] + ".csv")
    with open(topo, "w") as f:
        f.write(header + "\n" + ",".join(row) + ",\n")
    layout = os.path.join(workdir, "layout.csv")  # unused with custom layouts off, but must exist
    with open(layout, "w") as f:
        f.write("Layer name,\n")
    start = time.perf_counter()
    sim = scalesim(save_disk_space=True, verbose=False, config=config, topology=topo, layout=layout)
    sim.run_scale(top_path=workdir)
    seconds = time.perf_counter() - start
    run_dir = os.path.join(workdir, sim.config.get_run_name())
    compute = report_row(os.path.join(run_dir, "COMPUTE_REPORT.csv"))[:len(COMPUTE)]
    detail = report_row(os.path.join(run_dir, "DETAILED_ACCESS_REPORT.csv"))[:len(DETAIL)]
    return compute + detail, seconds


def main(config, topology, out, times=None):
    with open(topology) as f:
        lines = [line.strip() for line in f if line.strip()]
    header = lines[0]
    fields = ["layer", "ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "num_filters",
              "stride"]
    wall = []
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields + COMPUTE + DETAIL)
        for line in lines[1:]:
            row = [x.strip() for x in line.split(",")][:8]
            with tempfile.TemporaryDirectory() as workdir:
                values, seconds = run_layer(os.path.abspath(config), header, row, workdir)
            writer.writerow(row + values)
            f.flush()
            wall.append((row[0], seconds))
            print(row[0], values[1], values[2], f"{seconds:.1f}s", flush=True)
    if times:
        with open(times, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["layer", "scalesim_seconds"])
            writer.writerows([(name, f"{sec:.3f}") for name, sec in wall])


if __name__ == "__main__":
    main(*sys.argv[1:5])
