"""Compute modes (float / bf16 / int8) against torch's own CPU paths, interleaved in one process.

Linear rows: N=4096, K=14336 (the shape ggml's perf tests use), 4-bit codes of 16 power-of-two values,
M in --batches. Peers: fp32 F.linear, bf16 F.linear, torch int8 dynamic quantisation (quantize_dynamic),
int8 weight-only (torch._weight_int8pack_mm, bf16 activations), int4 weight-only group 128
(torch._weight_int4pack_mm_for_cpu, bf16 activations: the kernel torchao's Int4WeightOnlyConfig runs on
CPU), plus the weight-streaming rate of one core (the faster of torch.sum and wfn_cpu.stream_read, a plain
XOR over every word, on a buffer the size of the packed weight, same process, interleaved). Every WFN mode is
timed against every peer in one round robin.

Model rows: the ResNet-18-shaped net (shapes.py) with 4-bit power-of-two weights. Peers: fp32 eager,
fp32 channels_last, TorchScript frozen + torch.jit.optimize_for_inference, bf16 eager and bf16 channels_last
(NCHW max-pooling is a slow path in torch on CPU: 6.3 ms at 64x112x112 vs 0.3 channels_last), and an int8 static
model (torchao PT2E + X86InductorQuantizer, torch.compile) where it runs (else the reason is recorded).
WFN: float with optimize_for_inference (NCHW, and channels_last: the oneDNN convs then read and write NHWC
with no layout copies; and channels_last with wk.fuse_batchnorm first, which moves each BatchNorm (+ ReLU)
into its oneDNN conv: weights scaled per channel as they are decoded, ReLU as oneDNN's post-op, as
the frozen fp32 peer folds them; and the same with optimize_for_inference(max_workspace_bytes=) capped so
that everything counted stays within 1/4 of fp32, float_memory_cap), bf16 and int8 (NCHW), and bf16 / int8 channels_last (the model and
its input moved to channels_last as for the channels_last peers: the int8 convs then read and write NHWC, the
bf16 ones run oneDNN's channels_last conv, and the BatchNorm / ReLU / max-pool between them run on torch's
channels_last kernels; the bf16 ones as the bf16 peers run, model.bfloat16() and a bf16 input, so the layers
between the convs run in bf16 too and no activation is converted per layer), and int8 channels_last with every
BatchNorm (+ ReLU) folded into its conv's epilogue
(wk.fuse_batchnorm). bf16 peers also include the channels_last model under torch.compile (inductor fuses its
BatchNorm / ReLU), where it compiles. Logit error of each mode
against the WFN float model.
Runtime weight memory counts packed codes, biases and every decode workspace the kernels hold
(torch.ops.wfn_cpu.workspace_bytes, weight tiles included) plus the oneDNN-layout workspaces of
optimize_for_inference; the AMX path's packed-activation buffer (activation_workspace_bytes) holds
activations, not weights, and is reported beside it.
"""

from __future__ import annotations

import copy
import os
import warnings

import torch
import torch.nn.functional as F
from common import interleaved_times, stream_reads
from torch import nn

import wfn_kernels as wk
from wfn_kernels.format.codebook import Codebook

LLM_N, LLM_K = 4096, 14336


def int8_friendly_pow2(bits: int = 4) -> torch.Tensor:
    """16 power-of-two values whose integer table (in units of the smallest step 2^-8) is int8:
    0, +-2^-8 .. +-2^-2 and -2^-1 (-128 steps)."""
    vals = [0.0] + [s * 2.0 ** -e for e in range(2, 9) for s in (1.0, -1.0)] + [-0.5]
    assert len(vals) == 1 << bits
    return torch.tensor(sorted(vals), dtype=torch.float32)


def wfn_linear(w: torch.Tensor, compute: str) -> nn.Module:
    """A bias-free Linear holding w, converted to WFN with the given compute mode (the benches' subject)."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    model = nn.Sequential(lin)
    wk.convert(model, compute=compute)
    return model


def _median(ts):
    s = sorted(ts)
    return s[len(s) // 2]


def _peers_linear(m: int, n: int, k: int, w: torch.Tensor) -> dict:
    """Callables of the peers on one shape (weights from the same dense matrix w)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(m, k, generator=g)
    xb = x.bfloat16()
    wb = w.bfloat16()
    peers = {"fp32": lambda: F.linear(x, w), "bf16": lambda: F.linear(xb, wb)}
    lin = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
    peers["int8_dynamic"] = torch.no_grad()(lambda: q(x))
    scale = w.abs().amax(1) / 127
    w8 = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    s8 = scale.bfloat16()
    peers["int8_weight_only"] = lambda: torch._weight_int8pack_mm(xb, w8, s8)
    try:
        from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

        wg = w.reshape(n, k // 128, 128)
        lo, hi = wg.amin(-1), wg.amax(-1)
        sc = ((hi - lo) / 15).clamp(min=1e-8)
        q4 = torch.clamp(torch.round((wg - lo[..., None]) / sc[..., None]), 0, 15).to(torch.int32).reshape(n, k)
        # tinygemm's zero is the value of the mid code: w = (q - 8) * scale + zero
        zero = lo + 8 * sc
        p4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1)
        sz = pack_tinygemm_scales_and_zeros(sc.bfloat16(), zero.bfloat16(), torch.bfloat16)
        peers["int4_weight_only_g128"] = lambda: torch._weight_int4pack_mm_for_cpu(xb, p4, 128, sz)
    except Exception as exc:  # noqa: BLE001 (recorded: a peer that cannot run here is named with the reason)
        peers["int4_weight_only_g128"] = f"unavailable: {type(exc).__name__}: {exc}"
    return peers, x


def linear_mode_rows(batches, repeats: int, threads: int, n: int = LLM_N,
                     k: int = LLM_K) -> tuple[list[dict], list[str]]:
    torch.set_num_threads(threads)
    cb = int8_friendly_pow2(4)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, cb.numel(), (n, k), generator=g)
    w = cb[codes]
    lin = nn.Sequential(nn.Linear(k, n, bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(w)
    wk.convert(lin, codebook=Codebook.from_values(cb.tolist(), max_entries=None))
    layers = {}
    for mode in ("float", "bf16", "int8"):
        layer = copy.deepcopy(lin[0])
        layer.set_compute(mode)
        layers[mode] = layer
    packed_bytes = lin[0].packed.numel() + 4 * lin[0].codebook.numel()
    stream = torch.rand(packed_bytes // 4)
    rows, notes = [], []
    for m in batches:
        peers, x = _peers_linear(m, n, k, w)
        fns, names = [], []
        for name, fn in peers.items():
            if isinstance(fn, str):
                notes.append(f"{name}: {fn}")
                continue
            fns.append(fn)
            names.append(name)
        with torch.no_grad():
            y_float = layers["float"](x)
            errs = {mode: float((layers[mode](x) - y_float).abs().max() / y_float.abs().max()) for mode in layers}
        for mode, layer in layers.items():
            fns.append(torch.no_grad()(lambda layer=layer: layer(x)))
            names.append(f"wfn_{mode}")
        fns += stream_reads(stream)
        names += ["stream_sum", "stream_read"]
        # small M: milliseconds a call, so three times the samples for steadier medians on this noisy VM
        times = interleaved_times(fns, repeats if m > 4 else 3 * repeats)
        med = {name: _median(ts) for name, ts in zip(names, times)}
        # the streaming rate: the faster of two plain one-core reads of a buffer the codes' size
        sum_s, read_s = med.pop("stream_sum"), med.pop("stream_read")
        med["stream"] = min(sum_s, read_s)
        names = names[:-2] + ["stream"]
        row = {"kind": "modes-linear", "M": m, "N": n, "K": k, "bits": 4, "threads": threads,
               "packed_bytes": packed_bytes, "stream_gbs": packed_bytes / med["stream"] / 1e9,
               "stream_sum_gbs": packed_bytes / sum_s / 1e9, "stream_read_gbs": packed_bytes / read_s / 1e9}
        for name, t in med.items():
            row[f"{name}_s"] = t
        best = min((med[p], p) for p in names if p not in ("stream",) and not p.startswith("wfn_"))
        row["best_peer"] = best[1]
        for mode in layers:
            t = med[f"wfn_{mode}"]
            row[f"wfn_{mode}_err"] = errs[mode]
            row[f"wfn_{mode}_vs_best"] = best[0] / t
            row[f"wfn_{mode}_gbs"] = packed_bytes / t / 1e9
            for p in names:
                if p != "stream" and not p.startswith("wfn_"):
                    row[f"wfn_{mode}_vs_{p}"] = med[p] / t
        row["wfn_int8_pct_stream"] = 100 * row["wfn_int8_gbs"] / row["stream_gbs"]
        row["wfn_float_pct_stream"] = 100 * row["wfn_float_gbs"] / row["stream_gbs"]
        rows.append(row)
    return rows, sorted(set(notes))


def _kaiming_pow2_scale(net: nn.Module) -> None:
    """Scale each layer's codebook weights by a power of two so their rms is near Kaiming's sqrt(2 / fan_in):
    the logits then carry signal (not just the fc bias), and every layer stays on a power-of-two codebook."""
    import math

    with torch.no_grad():
        for mod in net.modules():
            if type(mod) in (nn.Linear, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                rms = float(mod.weight.pow(2).mean().sqrt())
                mod.weight.mul_(2.0 ** round(math.log2(math.sqrt(2 / fan_in) / rms)))


def _int8_static(float_model: nn.Module, x: torch.Tensor):
    """torchao PT2E int8 static quantisation with X86InductorQuantizer, compiled with inductor."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    m = copy.deepcopy(float_model).eval()
    exported = torch.export.export(m, (x,)).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.randn_like(x))
    converted = convert_pt2e(prepared)
    with torch.no_grad():
        compiled = torch.compile(converted)
        compiled(x)
    return compiled


def runtime_weight_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, int, int]:
    """(packed bytes, weight workspace bytes, activation workspace bytes) the model holds after one no-grad
    forward pass on x, measured alone: the extension's decode workspaces (weight tiles included, the AMX
    path's packed activations separated out) plus the oneDNN-layout copies of optimize_for_inference."""
    from wfn_kernels.nn import onednn_layout as onednn

    torch.ops.wfn_cpu.reset_workspaces()
    onednn.clear_workspaces()  # the oneDNN-layout decode workspaces this model makes, alone
    with torch.no_grad():
        model(x)
    act = int(torch.ops.wfn_cpu.activation_workspace_bytes())
    ws = int(torch.ops.wfn_cpu.workspace_bytes()) - act + onednn.workspace_bytes()
    return wk.weight_bytes(model)["packed_bytes"], ws, act


def float_memory_cap(model: nn.Module, fp32_bytes: int) -> int:
    """max_workspace_bytes that keeps a float model's runtime weight memory within 1/4 of fp32: the quarter,
    less its packed codes and the plain conv path's decode block (WFN_CONV_TILE_BYTES, 4 MiB by default)."""
    block = int(os.environ.get("WFN_CONV_TILE_BYTES", 4 << 20))
    return max(0, fp32_bytes // 4 - wk.weight_bytes(model)["packed_bytes"] - block)


def model_mode_rows(batches, repeats: int, threads: int, int8_static: bool = True,
                    resolution: int = 224, bf16_compile: bool = True) -> tuple[list[dict], list[str]]:
    from shapes import ResNet18, put_on_codebook

    from wfn_kernels.nn import onednn_layout as onednn

    torch.set_num_threads(threads)
    notes = []
    net = ResNet18().eval()
    put_on_codebook(net, int8_friendly_pow2(4))
    _kaiming_pow2_scale(net)
    fp32_bytes = sum(4 * p.numel() for mod in net.modules() if type(mod) in (nn.Linear, nn.Conv2d)
                     for p in [mod.weight])
    wfn = {}
    for mode in ("float", "bf16", "int8"):
        m = copy.deepcopy(net)
        wk.convert(m, compute=mode)
        wfn[mode] = m
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(batch))
        peers = {"fp32_eager": lambda: net(x)}
        net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
        x_cl = x.to(memory_format=torch.channels_last)
        peers["fp32_channels_last"] = lambda: net_cl(x_cl)
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), x)))
        peers["fp32_frozen"] = lambda: frozen(x)
        net_bf = copy.deepcopy(net).bfloat16()
        xb = x.bfloat16()
        peers["bf16_eager"] = lambda: net_bf(xb)
        net_bf_cl = copy.deepcopy(net_bf).to(memory_format=torch.channels_last)
        xb_cl = xb.to(memory_format=torch.channels_last)
        peers["bf16_channels_last"] = lambda: net_bf_cl(xb_cl)
        if not bf16_compile:
            notes.append("bf16 torch.compile peer skipped (--no-bf16-compile)")
        else:
            try:  # inductor fuses BatchNorm / ReLU into its bf16 channels_last graph: the strongest bf16 path
                with torch.no_grad():
                    net_bf_comp = torch.compile(copy.deepcopy(net_bf_cl))
                    net_bf_comp(xb_cl)
                peers["bf16_compiled"] = lambda: net_bf_comp(xb_cl)
            except Exception as exc:  # noqa: BLE001 (the reason goes into the results header)
                notes.append(f"bf16 torch.compile peer did not run: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}")
        if int8_static:
            try:
                q = _int8_static(net, x)
                peers["int8_static"] = lambda: q(x)
            except Exception as exc:  # noqa: BLE001 (the reason goes into the results header)
                notes.append(f"int8 static peer (torchao PT2E + X86InductorQuantizer) did not run: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        else:
            notes.append("int8 static peer skipped (--no-int8-static)")
        float_opt = wfn["float"]
        float_cl = copy.deepcopy(wfn["float"]).to(memory_format=torch.channels_last)
        float_cl_fused = wk.fuse_batchnorm(wfn["float"]).to(memory_format=torch.channels_last)
        float_cl_fused_cap = wk.fuse_batchnorm(wfn["float"]).to(memory_format=torch.channels_last)
        onednn.clear_workspaces()
        if not onednn.unavailable_reason():
            float_opt = copy.deepcopy(wfn["float"])
            wk.optimize_for_inference(float_opt, x)
            wk.optimize_for_inference(float_cl, x_cl)
            wk.optimize_for_inference(float_cl_fused, x_cl)  # BatchNorm / ReLU inside the oneDNN convs
            wk.optimize_for_inference(float_cl_fused_cap, x_cl, max_workspace_bytes=float_memory_cap(wfn["float"],
                                                                                                   fp32_bytes))
        cands = {"wfn_float": float_opt, "wfn_float_cl": float_cl, "wfn_float_cl_fused": float_cl_fused,
                 "wfn_float_cl_fused_cap": float_cl_fused_cap,
                 # bf16 mode as the bf16 peers run: model.bfloat16() (BatchNorm etc. in bf16; WFN layers keep their
                 # exact codebook) and a bf16 input
                 "wfn_bf16": copy.deepcopy(wfn["bf16"]).bfloat16(), "wfn_int8": wfn["int8"],
                 "wfn_bf16_cl": copy.deepcopy(wfn["bf16"]).bfloat16().to(memory_format=torch.channels_last),
                 "wfn_int8_cl": copy.deepcopy(wfn["int8"]).to(memory_format=torch.channels_last),
                 "wfn_int8_cl_fused": wk.fuse_batchnorm(wfn["int8"]).to(memory_format=torch.channels_last)}
        inputs = {name: (xb_cl if "_cl" in name else xb) if name.startswith("wfn_bf16")
                  else (x_cl if "_cl" in name else x) for name in cands}
        with torch.no_grad():
            ref = wfn["float"](x)
            errs = {name: float((m(inputs[name]).float() - ref).abs().max() / ref.abs().max())
                    for name, m in cands.items()}
            peer_errs = {}
            for name, fn in peers.items():
                y = fn().float()
                peer_errs[name] = float((y - ref).abs().max() / ref.abs().max())
        names = list(peers) + list(cands)
        fns = [torch.no_grad()(fn) for fn in peers.values()]
        fns += [torch.no_grad()(lambda m=m, xi=inputs[name]: m(xi)) for name, m in cands.items()]
        times = interleaved_times(fns, repeats, warmup=1)
        med = {name: _median(ts) for name, ts in zip(names, times)}
        row = {"kind": "modes-model", "name": f"resnet18-shaped (4-bit, {resolution}x{resolution})", "M": batch,
               "threads": threads,
               "fp32_weight_bytes": fp32_bytes}
        for name, t in med.items():
            row[f"{name}_s"] = t
        for name, e in {**errs, **peer_errs}.items():
            row[f"{name}_err"] = e
        fp32_paths = [p for p in ("fp32_eager", "fp32_channels_last", "fp32_frozen") if p in med]
        best_fp32 = min(med[p] for p in fp32_paths)
        best_bf16 = min(med[p] for p in ("bf16_eager", "bf16_channels_last", "bf16_compiled") if p in med)
        best = min((med[p], p) for p in peers)
        row["best_peer"] = best[1]
        for name in cands:
            t = med[name]
            row[f"{name}_vs_best"] = best[0] / t
            row[f"{name}_vs_fastest_fp32"] = best_fp32 / t
            row[f"{name}_vs_fastest_bf16"] = best_bf16 / t
            for p in peers:
                row[f"{name}_vs_{p}"] = med[p] / t
        # runtime weight memory of each WFN mode: packed codes + local codebooks + biases + workspaces
        for name, m in cands.items():
            packed, ws, act = runtime_weight_bytes(m, inputs[name])
            row[f"{name}_weight_bytes"] = packed + ws
            row[f"{name}_workspace_bytes"] = ws
            row[f"{name}_activation_workspace_bytes"] = act
            row[f"{name}_memory_ratio"] = (packed + ws) / fp32_bytes
        rows.append(row)
    return rows, notes
