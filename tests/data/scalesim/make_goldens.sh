#!/usr/bin/env bash
# Regenerate the SCALE-Sim v3.0.0 goldens used by tests/sim/test_scalesim_golden.py: the 18 layers of
# golden_layers.csv on a 32x32 array (three 64 KB SRAMs) and the 8 layers of golden_small_layers.csv on a
# 16x48 array with 8/4/6 KB SRAMs, each in the ws, os and is dataflows. SCALE-Sim lives in its own
# virtual environment (it needs numpy < 2.3) and never in the project's. Takes ~10 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SCALESIM_VENV:-/tmp/scalesim-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install "scalesim==3.0.0" "numpy<2.3"
fi
for df in ws os is; do
    "$venv/bin/python" "$here/run_scalesim.py" "$here/scalesim_${df}32.cfg" "$here/golden_layers.csv" \
        "$here/golden_${df}32.csv"
    "$venv/bin/python" "$here/run_scalesim.py" "$here/scalesim_${df}_r16c48.cfg" "$here/golden_small_layers.csv" \
        "$here/golden_${df}_r16c48.csv"
done
