"""A model fixed by WFN in the paper's configuration (not a synthetic codebook): fp32 eager against WFN's
float and int8 modes, interleaved medians (1 thread by default), with each layer's integer-table width (the int8 mode
holds a layer's weights as int8 where its values span at most 8 bits of power-of-two steps, else int16).

    python bench/fixed_model_modes.py [MODEL_FILE] [--batch B] [--threads T] [--repeats R]
    (default: bench/results/curve/models/small-cnn_s0_wfn_d0.0075.safetensors, batch 256; nothing else running)
"""

from __future__ import annotations

import argparse
import copy
import subprocess
from pathlib import Path

import torch
from common import interleaved_medians

import wfn_kernels as wk
from wfn_kernels.format.container import read_safetensors
from wfn_kernels.ops.int8 import integer_weights
from wfn_kernels.workflows import models

DEFAULT = Path(__file__).parent / "results/curve/models/small-cnn_s0_wfn_d0.0075.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(DEFAULT))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.batch < 1 or args.repeats < 1 or args.threads < 1:
        ap.error(f"--batch, --repeats and --threads must be >= 1, got {args.batch}, {args.repeats}, {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        _, meta, tensors = read_safetensors(args.model, kind="wfn-model", what="model file")
    except (OSError, ValueError) as e:  # missing, damaged, or not a model `wfn fix` wrote
        ap.error(str(e))
    base = models.build(meta["wfn_model"])
    base.load_state_dict(tensors)
    base.eval()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, torch {torch.__version__}, {args.threads} thread(s), {Path(args.model).name} "
          f"({meta['wfn_model']}), batch {args.batch}, input 1x28x28\n")
    ms = {}
    for mode in ("float", "int8"):
        ms[mode] = copy.deepcopy(base)
        wk.convert(ms[mode], compute=mode)
        ms[mode].eval()
    converted = dict(ms["int8"].named_modules())
    print("| layer | shape | unique values | code bits | integer weights up to | int8-mode table |")
    print("|---|---|---|---|---|---|")
    for name, mod in base.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            u = torch.unique(mod.weight.detach())
            iw = integer_weights(u)
            print(f"| {name} | {tuple(mod.weight.shape)} | {u.numel()} | {converted[name].bits} | {iw.max_abs} | "
                  f"{'int8' if iw.narrow else 'int16'} |")
    x = torch.randn(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = base(x)
        t = interleaved_medians([lambda: base(x), lambda: ms["float"](x), lambda: ms["int8"](x)],
                                repeats=args.repeats, warmup=2)
        err = ((ms["int8"](x) - ref).abs().max() / ref.abs().max()).item()
    print("\n| fp32 eager ms | WFN float ms | WFN int8 ms | float vs fp32 | int8 vs fp32 | int8 logits max rel. error |")
    print("|---|---|---|---|---|---|")
    print(f"| {t[0] * 1e3:.2f} | {t[1] * 1e3:.2f} | {t[2] * 1e3:.2f} | {t[0] / t[1]:.2f}x | {t[0] / t[2]:.2f}x | "
          f"{err:.4f} |")
    per_layer(base, ms, x, args.repeats)


def per_layer(base, ms, x, repeats: int) -> None:
    """Each conv / linear layer alone on the input it sees in the model, in the three forms (where the int8
    mode's time goes); the rest of the model (pooling, BN, ReLU) is the whole-model time minus their sum."""
    inputs = {}
    hooks = [mod.register_forward_hook(lambda m, i, o, name=name: inputs.__setitem__(name, i[0]))
             for name, mod in base.named_modules() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        base(x)
    for h in hooks:
        h.remove()
    layers = {mode: dict(m.named_modules()) for mode, m in ms.items()}
    fp32 = dict(base.named_modules())
    print("\n| layer | input | fp32 ms | WFN float ms | WFN int8 ms | int8 vs fp32 |")
    print("|---|---|---|---|---|---|")
    total = [0.0, 0.0, 0.0]
    for name, xi in inputs.items():
        fns = [fp32[name], layers["float"][name], layers["int8"][name]]
        with torch.no_grad():
            t = interleaved_medians([lambda f=f: f(xi) for f in fns], repeats=repeats, warmup=2)
        total = [a + b for a, b in zip(total, t)]
        print(f"| {name} | {tuple(xi.shape)} | {t[0] * 1e3:.2f} | {t[1] * 1e3:.2f} | {t[2] * 1e3:.2f} | "
              f"{t[0] / t[2]:.2f}x |")
    print(f"| all conv / linear layers | | {total[0] * 1e3:.2f} | {total[1] * 1e3:.2f} | {total[2] * 1e3:.2f} | "
          f"{total[0] / total[2]:.2f}x |")


if __name__ == "__main__":
    main()
