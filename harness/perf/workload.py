"""Workload benchmarks: the pipelines users run, end to end, on a tokenized dataset; the static
forward throughput of the same batches is the ceiling they are compared against.

``embed`` — per (variant, backend, precision): build the backend (timed), the tiny warm-up that
``gfqual embed`` does, then one pass of ``harness.embeddings.extract`` with the same default token
budget (``gfqual embed``'s own path: batching, pooling, copies, kernel plans met for the first time)
under GPU telemetry: cells/s, tokens/s, NVML GPU busy. Then the same batches, already on the
device, through ``Backend.encode`` back to back (CUDA events): the static tokens/s at exactly these
shapes. pipeline efficiency = end-to-end tokens/s ÷ static tokens/s.

``perturb`` — delete (or overexpress) every gene of the first ``cells`` cells
(``harness.downstream.perturb``): perturbations/s and tokens/s, and from that rate a projection of
deleting every gene in ``PROJECTION_CELLS`` cells with the dataset's own lengths.
"""

from __future__ import annotations

import time

import torch

from harness.backends import build_backend
from harness.capability import probe
from harness.embeddings import batch_plan, default_token_budget, extract, layers_to_run, synchronize
from harness.perf.telemetry import Telemetry
from harness.precision import get_precision
from models.registry import Variant

PROJECTION_CELLS = 1500  # the Geneformer paper's perturbation scale: ≈ 60 h on an A100 with the original code


def _free_cached_memory() -> None:
    """Give a released backend's GPU memory back before the next row builds its own."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _skipped(base: dict, backend: str, precision: str) -> dict | None:
    reason = probe().skip_reason(backend, precision)
    return {**base, "status": "skipped", "reason": reason} if reason else None


def _base(
    workload: str, variant: Variant, backend_name: str, precision: str, cells: list, cells_from: str, **extra
) -> dict:
    """What every workload row says of what it ran on."""
    return {
        "record": "workload",
        "workload": workload,
        "variant": variant.name,
        "backend": backend_name,
        "precision": precision,
        "cells": len(cells),
        "cells_from": cells_from,
        "mean_length": sum(map(len, cells)) / len(cells),
        **extra,
    }


def embed_workload(
    variant: Variant,
    backend_name: str,
    precision: str,
    cells: list,
    source,
    cells_from: str,
    max_tokens: int | None = None,
) -> dict:
    """One embed workload row (see the module docstring)."""
    base = _base("embed", variant, backend_name, precision, cells, cells_from)
    skipped = _skipped(base, backend_name, precision)
    if skipped:
        return skipped
    start = time.perf_counter()
    backend = build_backend(backend_name, source, get_precision(precision))
    synchronize(backend.device)
    build_s = time.perf_counter() - start
    budget = max_tokens or default_token_budget(backend, variant)
    extract(backend, cells[:2], variant, max_tokens=budget)
    tokens = sum(map(len, cells))
    with Telemetry() as telemetry:
        start = time.perf_counter()
        extract(backend, cells, variant, max_tokens=budget)
        seconds = time.perf_counter() - start
    static_s = static_seconds(backend, cells, variant, budget)
    util = telemetry.summary().get("gpu_util")
    attention = backend.attention_backend
    del backend
    _free_cached_memory()
    return {
        **base,
        "status": "reported",
        "attention_backend": attention,
        "max_tokens": budget,
        "build_s": build_s,
        "tokens": tokens,
        "seconds": seconds,
        "cells_per_s": len(cells) / seconds,
        "tokens_per_s": tokens / seconds,
        "gpu_util_mean": util,
        "static_seconds": static_s,
        "static_tokens_per_s": tokens / static_s,
        "pipeline_efficiency": static_s / seconds,
    }


def static_seconds(backend, cells: list, variant: Variant, budget: int) -> float:
    """The forward passes alone: the workload's own batches, already on the device, back to back."""
    plan = batch_plan(backend, cells, variant, None, budget)
    batches = [batch.to(backend.device) for batch, _ in plan]
    n_layers = layers_to_run(variant, -1)
    backend.encode(batches[-1], n_layers)  # every shape has been met by the end-to-end pass already
    synchronize(backend.device)
    start = time.perf_counter()
    for batch in batches:
        backend.encode(batch, n_layers)
    synchronize(backend.device)
    return time.perf_counter() - start


def perturb_workload(
    variant: Variant,
    backend_name: str,
    precision: str,
    cells: list,
    source,
    cells_from: str,
    all_lengths: list[int],
    mode: str = "delete",
    max_tokens: int | None = None,
) -> dict:
    """Every gene of ``cells`` perturbed, toward the mean embedding of the cells themselves."""
    from harness.downstream.perturb import perturb

    base = _base("perturb", variant, backend_name, precision, cells, cells_from, perturbation=mode)
    skipped = _skipped(base, backend_name, precision)
    if skipped:
        return skipped
    backend = build_backend(backend_name, source, get_precision(precision))
    cells = [list(map(int, c)) for c in cells]
    goal = extract(backend, cells, variant, max_tokens=max_tokens).vectors.mean(axis=0)
    specials = set(variant.special_tokens.values())
    genes = sorted({t for c in cells for t in c if t not in specials})
    perturb(backend, cells[:1], variant, genes[:8], goal, mode, max_tokens=max_tokens)  # warm-up
    result = perturb(backend, cells, variant, genes, goal, mode, max_tokens=max_tokens)
    attention = backend.attention_backend
    del backend
    _free_cached_memory()
    n = len(result.cell)
    tokens_per_s = result.padded_tokens / result.seconds
    n_specials = 2 if variant.has_cls_eos else 0
    lengths = [all_lengths[i % len(all_lengths)] for i in range(PROJECTION_CELLS)]
    projected_tokens = sum(L + (L - n_specials) * (L - 1) for L in lengths)
    return {
        **base,
        "status": "reported",
        "attention_backend": attention,
        "perturbations": n,
        "seconds": result.seconds,
        "perturbations_per_s": n / result.seconds,
        "tokens_per_s": tokens_per_s,
        "padding_fraction": 1 - result.real_tokens / result.padded_tokens,
        "projection_cells": PROJECTION_CELLS,
        "projection_mean_length": sum(lengths) / len(lengths),
        "projected_hours": projected_tokens / tokens_per_s / 3600,
        "projection_note": "every gene deleted in each cell; the original Geneformer perturber: about 60 h "
        "on an A100 (Geneformer paper)",
    }
