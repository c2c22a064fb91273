"""Kernel kinds by name, for the kernel profile and the report that reads it (no torch here: the
report renders from results alone)."""

from __future__ import annotations

import re

# First match wins: attention kernels contain GEMM-like words ("wgmma"), so attention is tested first.
KERNEL_KINDS = (
    ("attention", ("fmha", "flash", "attn", "attention", "sdpa")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul")),
    ("layernorm", ("norm",)),
    ("fp8 cast/amax", ("cast", "quantize", "amax", "transpose", "fp8")),
)
OTHER = "other"


def kind_key(kind: str) -> str:
    """The flat record key holding a kind's milliseconds: ``ms_attention``, ``ms_fp8_cast_amax``."""
    return "ms_" + re.sub(r"\W+", "_", kind).strip("_")


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, words in KERNEL_KINDS if any(w in lowered for w in words)), OTHER)
