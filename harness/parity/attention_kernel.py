"""TE's attention kernel alone, against attention in fp64: is a failure the kernel's or the model's?

When model-level parity fails only where attention runs in FP8 (the ``*-dpa`` precisions), this
check takes the conversion and the rest of the model out of the picture. Seeded random Q, K, V of
a variant's head count and head dimension go through ``te.DotProductAttention`` at the precision
(the candidate), through PyTorch's SDPA in bf16 (the peer: the kernel HF's sdpa attention calls)
and through SDPA in float64 (the reference), and are judged by the tolerance table like an
attention stage of the model. The candidate also runs the same input twice: a forward kernel that
answers identical input differently is not qualified, whatever its error.
"""

from __future__ import annotations

import torch

from harness.capability import probe
from harness.parity.engine import judge_tensors
from harness.precision import Precision, calibrate, get_precision, make_recipe, quantization
from harness.progress import row_head
from harness.reasons import error_reason, skipped
from models.registry import Variant

KERNEL_STAGE = "attention_kernel"  # a "hidden" stage class in the tolerance table
KERNEL_BACKEND = "te-attention-kernel"


def _te_attention(precision: Precision, q, k, v) -> tuple[torch.Tensor, torch.Tensor]:
    """Two forwards of the same input through TE's attention at ``precision``. FP8 recipes first
    take one calibration forward with autograd on (DelayedScaling updates its scales only then)."""
    import transformer_engine.pytorch as te

    heads, head_dim = q.shape[2], q.shape[3]
    module = te.DotProductAttention(
        heads, head_dim, attn_mask_type="no_mask", qkv_format="bshd", attention_dropout=0.0
    ).eval()
    recipe = make_recipe(precision) if precision.is_fp8 else None
    if recipe is not None:
        calibrate(precision, recipe, lambda: module(q, k, v))
    with torch.no_grad(), quantization(precision, recipe):
        first = module(q, k, v)
        second = module(q, k, v)
    return first, second


def check_attention_kernel(variant: Variant, precision_name: str, seq_len: int, batch: int = 2, seed: int = 0) -> dict:
    """One record (``record: attention_kernel``): metrics, peer metrics, repeat difference, verdict.
    A machine that cannot run it gives a skipped record with the reason."""
    precision = get_precision(precision_name)
    base = {
        "record": "attention_kernel",
        "variant": variant.name,
        "backend": KERNEL_BACKEND,
        "precision": precision.name,
        "seq_len": seq_len,
        "batch": batch,
        "seed": seed,
        "heads": variant.num_attention_heads,
        "head_dim": variant.head_dim,
        "reference": "torch SDPA @ fp64",
        "peer": "torch SDPA @ bf16",
        "cells": "random Q, K, V ~ N(0, 1)",
    }
    cap = probe()
    reason = cap.skip_reason("te", precision)
    if not reason and precision.dtype != torch.bfloat16:
        reason = "the attention kernel check covers bf16 and the FP8 recipes (bf16 inputs)"
    if reason:
        return skipped(base, reason)

    generator = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len, variant.num_attention_heads, variant.head_dim)
    q, k, v = (torch.randn(shape, generator=generator).to(cap.device, torch.bfloat16) for _ in range(3))

    def sdpa(dtype):  # [B, S, H, D] in and out; SDPA wants [B, H, S, D]
        out = torch.nn.functional.scaled_dot_product_attention(*(t.to(dtype).transpose(1, 2) for t in (q, k, v)))
        return out.transpose(1, 2)

    def rows(t):  # one row per token, as the model's stages are compared
        return t.reshape(-1, variant.hidden_size)

    reference = rows(sdpa(torch.float64))
    try:
        first, second = _te_attention(precision, q, k, v)
    except Exception as exc:  # TE finding no kernel for this case is a finding: recorded
        return {**base, "status": "error", "reason": error_reason(exc)}
    status, violations, entry = judge_tensors(
        KERNEL_STAGE, precision, reference, rows(first), peer=rows(sdpa(torch.bfloat16))
    )
    repeat_max_abs = float((first.float() - second.float()).abs().max())
    if repeat_max_abs:
        status = "fail"
        violations = "; ".join(
            filter(None, [violations, f"not deterministic: the same input twice differs by up to {repeat_max_abs:.3g}"])
        )
    return {
        **base,
        "status": status,
        "violations": violations,
        "repeat_max_abs": repeat_max_abs,
        **{k: entry.metrics[k] for k in ("rel_l2", "cos_dist", "max_abs", "mean_abs")},
        **{f"peer_{k}": entry.peer_metrics[k] for k in ("rel_l2", "cos_dist", "max_abs")},
    }


def format_kernel_record(r: dict) -> str:
    head = f"{row_head(r)} {r['status'].upper():5s}"
    if r["status"] in ("skipped", "error"):
        return f"{head} {r['reason']}"
    return (
        f"{head} {r['seq_len']} tokens, {r['heads']}x{r['head_dim']}: rel_l2={r['rel_l2']:.2e} "
        f"(bf16 SDPA {r['peer_rel_l2']:.2e}), repeat max|d|={r['repeat_max_abs']:.2g} {r['violations']}"
    )
