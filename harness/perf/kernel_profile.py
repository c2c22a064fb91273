"""Where a pass's GPU time goes: CUDA kernel time by kind, from ``torch.profiler``, of a forward
(to MLM logits or the encoder alone) or a training step.

Why: a speed-up alone cannot say what caps it. FP8 recipes shorten only the GEMMs, so the share
of the FP8 pass spent in (bf16) attention, the head and the casts bounds what FP8 can gain; a
profile shows those shares on the GPU at hand. Kinds are decided from kernel names (cuDNN,
cuBLAS/nvjet, TE's own kernels); a kernel no rule matches counts as ``other``, never dropped.
"""

from __future__ import annotations

import collections

import torch

from harness.backends import build_backend
from harness.capability import probe
from harness.perf.kernel_kinds import KERNEL_KINDS, OTHER, kernel_kind, kind_key
from harness.perf.sweep import Point, layout_batches, step_for
from harness.perf.timing import warm
from harness.precision import get_precision
from harness.progress import row_head
from harness.reasons import skipped
from models.registry import get_variant

TOP_KERNELS = 8


def profile_point(point: Point, model, repeats: int = 3, seed: int = 0) -> dict:
    """One record (``record: kernel_profile``): kernel milliseconds per pass (``point.forward``) in
    total, by kind and for the longest kernels, for ``point`` (layout ``full``) on this GPU."""
    base = {
        "record": "kernel_profile",
        "variant": point.variant,
        "backend": point.backend,
        "precision": point.precision,
        "layout": point.layout,
        "batch": point.batch,
        "seq_len": point.seq_len,
        "forward": point.forward,
    }
    cap = probe()
    reason = "a kernel profile needs a CUDA GPU" if not cap.cuda else cap.skip_reason(point.backend, point.precision)
    if reason:
        return skipped(base, reason)
    from torch.profiler import ProfilerActivity, profile

    variant = get_variant(point.variant)
    backend = build_backend(point.backend, model, get_precision(point.precision), training=point.forward == "train")
    step = step_for(backend, point.forward, variant)
    batches = warm(backend, layout_batches(point, variant, seed), 2, step)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            for batch in batches:
                step(batch)
        torch.cuda.synchronize()
    by_kind, by_kernel = collections.Counter(), collections.Counter()
    for event in prof.key_averages():
        micros = getattr(event, "self_device_time_total", 0)
        if micros:
            by_kind[kernel_kind(event.key)] += micros
            by_kernel[event.key] += micros
    del backend
    torch.cuda.empty_cache()

    def per_pass(micros: float) -> float:  # profiler microseconds over all repeats -> ms per pass
        return micros / repeats / 1e3

    return {
        **base,
        "status": "reported",
        "repeats": repeats,
        "kernel_ms": per_pass(sum(by_kind.values())),
        **{kind_key(kind): per_pass(by_kind[kind]) for kind in (*(k for k, _ in KERNEL_KINDS), OTHER)},
        "top_kernels": "; ".join(
            f"{per_pass(t):.2f} ms {name[:120]}" for name, t in by_kernel.most_common(TOP_KERNELS)
        ),
    }


def format_profile(r: dict) -> str:
    head = f"{row_head(r)} {r.get('forward', 'mlm'):7s} B={r['batch']:<4}"
    if r["status"] != "reported":
        return f"{head} {r['status'].upper()}: {r['reason']}"
    kinds = ", ".join(
        f"{kind} {r[kind_key(kind)]:.1f} ({r[kind_key(kind)] / r['kernel_ms']:.0%})"
        for kind in (*(k for k, _ in KERNEL_KINDS), OTHER)
    )
    return f"{head} {r['kernel_ms']:.1f} ms of kernels per pass: {kinds}"
