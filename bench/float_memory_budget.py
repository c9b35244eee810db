"""The float mode under a weight-memory budget: the ResNet-18-shaped net (bench/shapes.py, 4-bit power-of-two
weights) in channels_last with BatchNorm / ReLU folded (wk.fuse_batchnorm), optimize_for_inference without a
cap and with max_workspace_bytes = fp32 bytes / 4 - packed bytes - the plain path's decode block
(WFN_CONV_TILE_BYTES, 4 MiB by default), so that everything counted stays within 1/4 of fp32; against fp32
channels_last and the TorchScript-frozen fp32 model, interleaved medians, one process.

    python bench/float_memory_budget.py [--threads 1] [--batches 1,8] [--repeats 9]

Runtime weight memory as bench/modes.py counts it (runtime_weight_bytes): packed codes + the extension's
decode workspaces + the oneDNN-layout copies, each model's measured alone after one forward pass.
"""

from __future__ import annotations

import argparse
import copy
import subprocess

import torch
from common import interleaved_medians
from modes import _kaiming_pow2_scale, float_memory_cap, int8_friendly_pow2, runtime_weight_bytes
from shapes import ResNet18, put_on_codebook
from torch import nn

import wfn_kernels as wk


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, torch {torch.__version__}, {args.threads} thread(s), medians of {args.repeats}")
    net = ResNet18().eval()
    put_on_codebook(net, int8_friendly_pow2(4))
    _kaiming_pow2_scale(net)
    fp32_bytes = sum(4 * m.weight.numel() for m in net.modules() if type(m) in (nn.Linear, nn.Conv2d))
    wfn = copy.deepcopy(net)
    wk.convert(wfn, compute="float")
    budget = float_memory_cap(wfn, fp32_bytes)
    print(f"fp32 weights {fp32_bytes} bytes; max_workspace_bytes {budget}")
    print("| batch | fp32 channels_last ms | fp32 frozen ms | WFN float, no cap ms | WFN float, cap ms | "
          "cap vs no cap | cap vs fastest fp32 | memory no cap / cap (of fp32) | layers on the oneDNN layout, no cap / cap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        x_cl = x.contiguous(memory_format=torch.channels_last)
        net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), x)))
        free = wk.fuse_batchnorm(wfn).to(memory_format=torch.channels_last)
        capped = wk.fuse_batchnorm(wfn).to(memory_format=torch.channels_last)
        r_free = wk.optimize_for_inference(free, x_cl)
        r_cap = wk.optimize_for_inference(capped, x_cl, max_workspace_bytes=budget)
        mem = [sum(runtime_weight_bytes(m, x_cl)[:2]) / fp32_bytes for m in (free, capped)]
        n_opt = [sum(why.startswith("optimized") for _, why in r) for r in (r_free, r_cap)]
        with torch.no_grad():
            y_ref = net(x)
            for m in (free, capped):
                err = float((m(x_cl) - y_ref).abs().max() / y_ref.abs().max())
                assert err < 1e-4, err
            t = interleaved_medians([lambda: net_cl(x_cl), lambda: frozen(x), lambda: free(x_cl),
                                     lambda: capped(x_cl)], repeats=args.repeats, warmup=1)
        ms = [v * 1e3 for v in t]
        print(f"| {batch} | {ms[0]:.2f} | {ms[1]:.2f} | {ms[2]:.2f} | {ms[3]:.2f} | {t[2] / t[3]:.3f}x | "
              f"{min(t[0], t[1]) / t[3]:.3f}x | {mem[0]:.3f} / {mem[1]:.3f} | {n_opt[0]} / {n_opt[1]} of {len(r_cap)} |",
              flush=True)


if __name__ == "__main__":
    main()
