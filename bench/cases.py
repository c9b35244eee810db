"""Measure one benchmark row: correctness against the reference first, then medians of every backend and
of the dense baselines in the same run."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from common import interleaved_medians, median_seconds
from torch import nn

import wfn_kernels as wk
from wfn_kernels.ops import reference


def pow2_codebook(bits: int) -> torch.Tensor:
    """2**bits distinct WFN-style values: for 2/4 bits 0 and +-2^e (order 0); for 8 bits the multiples of
    2^-7 in [-1, 1), each a signed sum of at most 4 powers of two (so all 256 codes are used)."""
    if bits == 8:
        return torch.arange(-128, 128, dtype=torch.float32) / 128
    n = 1 << bits
    vals = [0.0] + [s * 2.0 ** -e for e in range(1, n) for s in (1.0, -1.0)]
    return torch.tensor(sorted(vals[:n]), dtype=torch.float32)


def int8_dynamic(linear: nn.Linear) -> nn.Module:
    """torch's int8 dynamic quantisation of one Linear (the CPU quantised baseline)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)


def dense_baselines(m: int, n: int, k: int, device: str) -> dict:
    """Callables of the dense baselines on one shape: F.linear fp32 and bf16 (fp16 on GPU), and torch's
    int8 dynamic quantisation (CPU). Timed by linear_row interleaved with the WFN kernel."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=g).to(device)
    x = torch.randn(m, k, generator=g).to(device)
    out = {"fp32": lambda: F.linear(x, w)}
    wb, xb = w.bfloat16(), x.bfloat16()
    out["bf16"] = lambda: F.linear(xb, wb)
    if device == "cuda":
        wh, xh = w.half(), x.half()
        out["fp16"] = lambda: F.linear(xh, wh)
    else:
        lin = nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        q = int8_dynamic(lin)
        out["int8_dynamic"] = torch.no_grad()(lambda: q(x))
    return out


def linear_row(name, m, n, k, bits, backends, baselines, repeats, device, bandwidth_gbs) -> dict:
    """One (shape, bit width) row: check every backend against the reference, then time it interleaved
    (round robin) with the dense baselines, so machine noise hits both sides of each ratio alike."""
    g = torch.Generator().manual_seed(1)
    cb = pow2_codebook(bits).to(device)
    codes = torch.randint(0, cb.numel(), (n, k), generator=g)
    packed = wk.pack_codes(codes, bits).to(device)
    x = torch.randn(m, k, generator=g).to(device)
    expected = reference.codebook_linear(x, packed, cb, bits, k)
    row = {"kind": "linear", "name": name, "M": m, "N": n, "K": k, "bits": bits,
           "weight_bytes_packed": packed.numel() + 4 * cb.numel(), "weight_bytes_fp32": 4 * n * k}
    moved = row["weight_bytes_packed"] + 4 * m * (k + n)
    names = list(baselines)
    for b in backends:
        y = wk.codebook_linear(x, packed, cb, bits, backend=b, validate=False)
        err = float((y - expected).abs().max()) if y.numel() else 0.0
        tol = 1e-4 * max(float(expected.abs().max()) if expected.numel() else 1.0, 1.0)
        if err > tol:
            raise AssertionError(f"{name} M={m} bits={bits} backend {b}: max error {err:.3g} > {tol:.3g}")
        fn = lambda b=b: wk.codebook_linear(x, packed, cb, bits, backend=b, validate=False)  # noqa: E731
        t, *tb = interleaved_medians([fn] + [baselines[base] for base in names], repeats)
        row[f"{b}_s"] = t
        row[f"{b}_gbs"] = moved / t / 1e9
        row[f"{b}_pct_bw"] = 100.0 * row[f"{b}_gbs"] / bandwidth_gbs if bandwidth_gbs else float("nan")
        for base, tbase in zip(names, tb):
            row[f"{b}_vs_{base}"] = tbase / t
            row.setdefault(f"{base}_s", tbase)
    return row


def conv_row(name, batch, c_in, h, w, c_out, kernel, stride, padding, bits, backends, repeats, device) -> dict:
    """One ResNet-style conv layer: WFN conv vs torch fp32 conv2d on the same shape."""
    g = torch.Generator().manual_seed(2)
    cb = pow2_codebook(bits).to(device)
    wshape = (c_out, c_in, kernel, kernel)
    codes = torch.randint(0, cb.numel(), (c_out, c_in * kernel * kernel), generator=g)
    packed = wk.pack_codes(codes, bits).to(device)
    x = torch.randn(batch, c_in, h, w, generator=g).to(device)
    dense = cb[codes.to(device)].reshape(wshape)
    expected = F.conv2d(x, dense, None, stride, padding)
    row = {"kind": "conv", "name": name, "M": batch, "N": c_out, "K": c_in * kernel * kernel, "bits": bits,
           "weight_bytes_packed": packed.numel() + 4 * cb.numel(), "weight_bytes_fp32": 4 * dense.numel()}
    row["fp32_s"] = median_seconds(lambda: F.conv2d(x, dense, None, stride, padding), repeats)
    for b in backends:
        y = wk.codebook_conv2d(x, packed, cb, bits, wshape, None, stride, padding, backend=b, validate=False)
        torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-3)
        t = median_seconds(lambda b=b: wk.codebook_conv2d(x, packed, cb, bits, wshape, None, stride, padding,
                                                          backend=b, validate=False), repeats)
        row[f"{b}_s"] = t
        row[f"{b}_vs_fp32"] = row["fp32_s"] / t
    if device == "cpu" and "extension" in backends:
        # the WFNConv2d module after wk.optimize_for_inference (codes in oneDNN's blocked order), timed
        # interleaved with fp32 conv2d; a layer oneDNN would pad keeps the plain path, and says so
        conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        with torch.no_grad():
            conv.weight.copy_(dense)
        mod = nn.Sequential(conv)
        wk.convert(mod, codebook=wk.Codebook.from_values(cb.tolist(), max_entries=None))
        (_, how), = wk.optimize_for_inference(mod, x)
        with torch.no_grad():
            torch.testing.assert_close(mod(x), expected, rtol=1e-4, atol=1e-3)
            t_mod, t_fp32 = interleaved_medians([lambda: mod(x), lambda: F.conv2d(x, dense, None, stride, padding)],
                                                repeats)
        row.update({"module_opt_s": t_mod, "module_opt_fp32_s": t_fp32, "module_opt_vs_fp32": t_fp32 / t_mod,
                    "module_opt_path": "onednn layout" if how.startswith("optimized") else f"plain ({how})"})
    return row


def model_row(name: str, float_model: nn.Module, converted: nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Whole-model latency, float vs converted (outputs checked equal first, timed interleaved), and weight
    memory (plus the oneDNN decode workspace the converted model's layers hold, if any)."""
    from wfn_kernels.nn import onednn_layout as onednn

    float_model.eval()
    converted.eval()
    with torch.no_grad():
        torch.testing.assert_close(converted(x), float_model(x), rtol=1e-3, atol=1e-3)
        t_float, t_wfn = interleaved_medians([lambda: float_model(x), lambda: converted(x)], repeats, warmup=1)
    mem = wk.weight_bytes(converted)
    return {"kind": "model", "name": name, "M": x.shape[0], "float_s": t_float, "wfn_s": t_wfn,
            "wfn_vs_float": t_float / t_wfn, "weight_bytes_packed": mem["packed_bytes"],
            "weight_bytes_fp32": mem["fp32_bytes"], "memory_ratio": mem["packed_bytes"] / max(mem["fp32_bytes"], 1),
            "workspace_bytes": onednn.workspace_bytes()}
