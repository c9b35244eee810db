#!/usr/bin/env bash
# Regenerate the SCALE-Sim v3.0.0 goldens used by tests/sim/test_scalesim_golden.py.
# SCALE-Sim lives in its own virtual environment (it needs numpy < 2.3) and never in the project's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SCALESIM_VENV:-/tmp/scalesim-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install "scalesim==3.0.0" "numpy<2.3"
fi
"$venv/bin/python" "$here/run_scalesim.py" "$here/scalesim_ws32.cfg" "$here/golden_layers.csv" \
    "$here/golden_ws32.csv"
