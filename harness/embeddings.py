"""Geneformer embeddings from any backend: cells (mean over gene tokens, or <cls> for V2) and
contextual gene embeddings, from a chosen layer (Geneformer's ``emb_layer``: −1 = second-to-last).

Cells are batched by length (longest first, each batch filled up to a token budget), so little
compute goes to padding; results come back in input order. Under torchrun the cells are sharded
across ranks and every rank gets the whole result (``harness.distributed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from harness.backends import Backend, hooks
from harness.data.batching import collate
from harness.distributed import context, reassemble, run_on_every_rank, shard, sum_across_ranks
from harness.parity.engine import cell_embedding_stage, mean_over_genes
from harness.precision import FP8_TOKEN_MULTIPLE
from models.registry import Variant

MODES = ("cell", "cls", "gene")


@dataclass
class Embeddings:
    mode: str
    layer_stage: str
    vectors: np.ndarray  # [n_cells, H] (cell, cls) or [n_genes, H] (gene)
    gene_tokens: np.ndarray | None = None  # gene mode: the token id of each row
    gene_counts: np.ndarray | None = None  # gene mode: in how many cell positions each gene appeared


def length_batches(cells: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Indices of cells grouped longest-first so that batch size × longest length ≤ max_tokens."""
    order = sorted(range(len(cells)), key=lambda i: -len(cells[i]))
    groups, current = [], []
    for i in order:
        longest = len(cells[current[0]]) if current else len(cells[i])
        if current and (len(current) + 1) * longest > max_tokens:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def stage_output(backend: Backend, batch, stage: str) -> torch.Tensor:
    """One stage's output (float32) for a batch: the hidden states embeddings are read from."""
    captured = {}
    with hooks([t for t in backend.taps() if t.stage == stage][:1], lambda _s, t: captured.__setitem__("h", t)):
        backend.forward(batch)
    return captured["h"].float()


@torch.no_grad()
def extract(
    backend: Backend, cells: list[list[int]], variant: Variant, mode: str = "cell",
    emb_layer: int = -1, max_tokens: int = 16384, pad_multiple: int = 1,
) -> Embeddings:
    """``pad_multiple`` rounds each batch's length up (FP8 needs 16); see ``gfqual embed``."""
    if mode not in MODES:
        raise ValueError(f"embedding mode must be one of {MODES}, not {mode!r}")
    if mode == "cls" and not variant.has_cls_eos:
        raise ValueError(f"{variant.name} has no <cls> token; use mode 'cell' (mean over genes)")
    stage = cell_embedding_stage(variant.num_hidden_layers, emb_layer)
    multiple = math.lcm(pad_multiple, FP8_TOKEN_MULTIPLE if backend.precision.is_fp8 else 1)
    ctx = context()
    mine = shard([len(c) for c in cells], ctx.rank, ctx.world_size)  # a world of one: every cell
    local = [cells[i] for i in mine]

    def work():
        return _extract_local(backend, local, variant, mode, stage, max_tokens, multiple)

    if mode != "gene":
        parts = run_on_every_rank(lambda: (mine, work()))
        vectors = reassemble(parts, len(cells), _in_input_order)
        return Embeddings(mode, stage, vectors)
    sums, counts = run_on_every_rank(work, gather=False)
    sums, counts = sum_across_ranks(sums), sum_across_ranks(counts)
    seen = torch.nonzero(counts).squeeze(1)
    vectors = (sums[seen] / counts[seen, None]).float().numpy()
    return Embeddings(mode, stage, vectors, seen.numpy(), counts[seen].numpy())


def _in_input_order(parts, indices) -> np.ndarray:
    rows = np.concatenate([rows for _, rows in parts])
    out = np.empty_like(rows)
    out[indices] = rows
    return out


def _extract_local(backend, cells, variant, mode, stage, max_tokens, multiple):
    """This rank's cells: [n, H] vectors in the order given, or (sums, counts) per gene token."""
    hidden_size = variant.hidden_size
    if mode == "gene":
        sums = torch.zeros(variant.vocab_size, hidden_size, dtype=torch.float64)
        counts = torch.zeros(variant.vocab_size, dtype=torch.long)
    else:
        out = np.zeros((len(cells), hidden_size), dtype=np.float32)
    for group in length_batches(cells, max_tokens):
        batch = collate([cells[i] for i in group], variant, multiple)
        hidden = stage_output(backend, batch, stage)
        b = batch.to(hidden.device)
        if mode == "cell":
            out[group] = mean_over_genes(hidden, b.gene_mask).cpu().numpy()
        elif mode == "cls":
            out[group] = hidden[:, 0].cpu().numpy()
        else:
            ids = b.input_ids[b.gene_mask].cpu()
            sums.index_add_(0, ids, hidden[b.gene_mask].double().cpu())
            counts.index_add_(0, ids, torch.ones_like(ids))
    return (sums, counts) if mode == "gene" else out


def compare_cell_embeddings(
    reference: Backend, candidate: Backend, cells: list[list[int]], variant: Variant, emb_layer: int = -1
) -> tuple[str, str, dict]:
    """Geneformer cell embeddings of the same cells from two backends, judged with the parity
    tolerance of the candidate's precision: (status, violations, metrics)."""
    from harness.parity.engine import judge_tensors

    ref = extract(reference, cells, variant, "cell", emb_layer)
    cand = extract(candidate, cells, variant, "cell", emb_layer)
    status, violations, entry = judge_tensors("cell_embedding", candidate.precision.name,
                                              torch.from_numpy(ref.vectors), torch.from_numpy(cand.vectors))
    return status, violations, entry.metrics
