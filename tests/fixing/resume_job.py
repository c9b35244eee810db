"""Subprocess body for the resume and torchrun tests: a tiny WFN run on digits.

usage: python resume_job.py RUN_DIR OUT_FILE [--resume] [--slow SECONDS]
Writes the final model state (safetensors) to OUT_FILE (suffixed with the rank under torchrun).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)

from safetensors.torch import save_file  # noqa: E402
from wfn_helpers import fast_config, tiny_setup  # noqa: E402

from wfn_kernels.fixing import fix_weights  # noqa: E402
from wfn_kernels.workflows.pipeline import init_distributed  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--slow", type=float, default=0.0)
    args = ap.parse_args()
    init_distributed()
    model, loader, _ = tiny_setup()
    cfg = fast_config(fix_fractions=(0.3, 0.6, 0.8, 0.9, 0.95, 1.0), max_steps_per_iteration=6)
    fix_weights(model, loader, None, cfg, run_dir=args.run_dir, resume=args.resume, progress=False,
                on_iteration=lambda e: time.sleep(args.slow))
    rank = os.environ.get("RANK")
    out = args.out if rank is None else f"{args.out}.rank{rank}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main()
