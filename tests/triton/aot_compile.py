"""Compile the Triton kernels ahead of time for NVIDIA targets, no GPU needed (run as a script).

Usage: python aot_compile.py ARCH [ARCH ...]   (e.g. 90 80). Prints one JSON line per compiled variant:
{"kernel", "arch", "bits", "dtype", "atomic", "m", "cubin_bytes", "vector_loads", "mma"}. Must run WITHOUT
TRITON_INTERPRET=1 (interpreted kernels cannot be compiled); the test runs it in a subprocess.
"""

import json
import re
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from wfn_kernels.ops.triton import choose_config
from wfn_kernels.ops.triton.int_kernels import int_gemm_kernel, int_gemv_kernel
from wfn_kernels.ops.triton.kernels import codebook_gemm_kernel, codebook_gemv_kernel

ARGS = ["x_ptr", "packed_ptr", "cb_ptr", "bias_ptr", "y_ptr", "M", "N", "K", "RB", "num_entries",
        "KB_PER_SPLIT", "stride_xm", "stride_xk", "stride_pn", "stride_ym", "stride_yn"]
# What Triton's launcher specialises at run time for 8192-wide contiguous tensors: 16-aligned pointers and
# sizes/strides divisible by 16.
DIV16 = {"x_ptr", "packed_ptr", "cb_ptr", "bias_ptr", "y_ptr", "K", "RB", "KB_PER_SPLIT", "stride_xm",
         "stride_pn", "stride_ym"}
TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _compile(kernel, arch, cfg, arg_names, types, div16, consts):
    """triton.compile of ``kernel`` for sm_``arch`` with the launcher's specialisation (16-divisible args)."""
    signature = dict(zip(arg_names, types)) | {name: "constexpr" for name in consts}
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(arg_names) if name in div16}
    src = ASTSource(fn=kernel, signature=signature, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})


def compile_variant(kernel, arch, bits, dtype, m, atomic):
    cfg = choose_config(m, 8192, 8192, bits, torch.device("cpu"))
    t = TRITON_TYPES[dtype]
    types = [f"*{t}", "*u8", "*fp32", "*fp32", "*fp32" if atomic else f"*{t}"] + ["i32"] * 11
    consts = dict(BITS=bits, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_KB=cfg.block_kb, HAS_BIAS=True,
                  ATOMIC=atomic, EVEN_KB=True)
    if kernel is codebook_gemm_kernel:
        consts.update(GROUP_M=cfg.group_m, DOT_FP32=dtype == torch.float32)
    compiled = _compile(kernel, arch, cfg, ARGS, types, DIV16, consts)
    ptx = compiled.asm["ptx"]
    return {"kernel": kernel.__name__, "arch": arch, "bits": bits, "dtype": t, "atomic": atomic,
            "cubin_bytes": len(compiled.asm["cubin"]),
            "vector_loads": bool(re.search(r"ld\.global(\.\w+)*\.v4\.b32", ptx)),
            "mma": bool(re.search(r"\b(wgmma|mma)\.", ptx))}


INT_ARGS = ["xq_ptr", "packed_ptr", "table_ptr", "y_ptr", "M", "N", "K", "RB", "num_entries", "stride_xm",
            "stride_xk", "stride_pn", "stride_ym", "stride_yn"]
INT_DIV16 = {"xq_ptr", "packed_ptr", "table_ptr", "y_ptr", "K", "RB", "stride_xm", "stride_pn", "stride_ym"}


def compile_int_variant(kernel, arch, bits, m, narrow):
    """The int8 mode's integer kernels: ``int_mma`` says whether the PTX has an s8 tensor-core MMA."""
    cfg = choose_config(m, 8192, 8192, bits, torch.device("cpu"))
    consts = dict(BITS=bits, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_KB=cfg.block_kb)
    if kernel is int_gemm_kernel:
        consts.update(GROUP_M=cfg.group_m, NARROW=narrow)
    types = ["*i8", "*u8", "*i32", "*i32"] + ["i32"] * 10
    compiled = _compile(kernel, arch, cfg, INT_ARGS, types, INT_DIV16, consts)
    ptx = compiled.asm["ptx"]
    return {"kernel": kernel.__name__, "arch": arch, "bits": bits, "dtype": "int8", "narrow": narrow,
            "cubin_bytes": len(compiled.asm["cubin"]),
            "int_mma": bool(re.search(r"\b(wgmma|mma)\.[\w.]*\.s8", ptx))}


def variants(arch):
    """(kernel, bits, dtype, M, atomic): every width and dtype on the first target, 4-bit fp16 on the others."""
    out = [(codebook_gemv_kernel, 4, torch.float16, 1, False), (codebook_gemm_kernel, 4, torch.float16, 64, False)]
    if arch == 90:
        out += [(codebook_gemv_kernel, 2, torch.float16, 1, False), (codebook_gemm_kernel, 2, torch.float16, 16, False),
                (codebook_gemv_kernel, 8, torch.float32, 1, False), (codebook_gemm_kernel, 8, torch.float16, 64, False),
                (codebook_gemv_kernel, 4, torch.bfloat16, 3, True), (codebook_gemm_kernel, 4, torch.bfloat16, 256, False),
                (codebook_gemm_kernel, 4, torch.float32, 16, True)]
    return out


def main(arches):
    for arch in arches:
        for kernel, bits, dtype, m, atomic in variants(arch):
            print(json.dumps(compile_variant(kernel, arch, bits, dtype, m, atomic) | {"m": m}), flush=True)
        for kernel, m, narrow in ((int_gemv_kernel, 1, True), (int_gemm_kernel, 64, True), (int_gemm_kernel, 64, False)):
            print(json.dumps(compile_int_variant(kernel, arch, 4, m, narrow) | {"m": m}), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [90])
