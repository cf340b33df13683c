"""Compile every Triton kernel of the package for a Hopper GPU (sm_90) without a GPU.

Run as a script, in a process WITHOUT ``TRITON_INTERPRET``: the interpreter accepts code that the
real Triton frontend refuses (a non-constexpr global read inside a kernel slipped through the
interpreter tests and failed on an H200). Prints one line per compiled kernel; exits non-zero
on the first failure. Used by tests/ops/test_kernels_compile.py.
"""

from __future__ import annotations

import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from repro_fast.ops import triton_logprob_entropy as head  # noqa: E402
from repro_fast.ops import triton_prefix_attention as attention  # noqa: E402
from repro_fast.ops import triton_segment_select as select  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(fn, pointers: dict[str, str], constexprs: dict[str, object], floats=()) -> int:
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        else:
            signature[name] = "fp32" if name in floats else "i32"
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(fn.arg_names.index(n),): v for n, v in constexprs.items()})
    return len(triton.compile(src, target=TARGET).asm["cubin"])


def main() -> int:
    jobs = []
    for dt in ("bf16", "fp16", "fp32"):
        fp32 = dt == "fp32"
        jobs.append((f"prefix_attention[{dt}]", attention._prefix_attention_partial_kernel,
                     {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "LIMIT": "*i32", "COPY_START": "*i32",
                      "PART_O": "*fp32", "PART_M": "*fp32", "PART_L": "*fp32"},
                     dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=128, FP32_DOT=fp32, IEEE=fp32), ("qk_scale",)))
        blocks = dict(BLOCK_M=64, BLOCK_V=128, BLOCK_K=64, HAS_BIAS=False, IS_FP32=fp32, UPCAST_DOT=False)
        jobs.append((f"head_forward[{dt}]", head._fwd_partial_kernel,
                     {"hidden_ptr": f"*{dt}", "weight_ptr": f"*{dt}", "bias_ptr": f"*{dt}",
                      "targets_ptr": "*i64", "part_max_ptr": "*fp32", "part_sum_ptr": "*fp32",
                      "part_ent_ptr": "*fp32", "part_tgt_ptr": "*fp32"}, blocks, ("inv_temperature",)))
        jobs.append((f"head_backward[{dt}]", head._bwd_dlogits_kernel,
                     {"hidden_ptr": f"*{dt}", "weight_ptr": f"*{dt}", "bias_ptr": f"*{dt}",
                      "targets_ptr": "*i64", "lse_ptr": "*fp32", "entropy_ptr": "*fp32",
                      "grad_logprob_ptr": "*fp32", "grad_entropy_ptr": "*fp32", "dlogits_ptr": f"*{dt}"},
                     blocks, ("inv_temperature",)))
    jobs.append(("head_combine", head._fwd_combine_kernel,
                 {n: "*fp32" for n in ("part_max_ptr", "part_sum_ptr", "part_ent_ptr", "part_tgt_ptr",
                                       "logprob_ptr", "entropy_ptr", "lse_ptr")} | {"targets_ptr": "*i64"},
                 dict(BLOCK=256), ()))
    jobs.append(("segment_select", select._segment_select_kernel,
                 {"ENT": "*fp32", "CAND": "*u8", "OUT": "*i64", "COUNT": "*i64"}, dict(BLOCK_N=1024), ()))
    for name, fn, pointers, constexprs, floats in jobs:
        size = compile_kernel(fn, pointers, constexprs, floats)
        print(f"compiled {name} for sm_90: {size} bytes of cubin", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
