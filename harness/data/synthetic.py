"""Synthetic rank-value encodings for runs without real cells.

A Geneformer cell is a list of distinct gene tokens ordered by normalised expression. Real cells
share their most expressed genes (housekeeping genes lead most cells) and differ in length (the
559-cell celltypist sample has a median of 1,209 expressed genes, with a long upper tail). Here
gene popularity is Zipf-like over a seeded permutation of the vocabulary, each cell draws its genes
without replacement by popularity (so the order is a plausible ranking), and lengths are
log-normal around the real median, scaled to the requested maximum. Every batch includes one
cell at the full length and at least one padded cell, so padding is always exercised.
"""

from __future__ import annotations

import math

import torch

from harness.data.batching import Batch, collate
from models.registry import Variant

REAL_MEDIAN_GENES = 1209  # celltypist sample, shared/data/scrna/PROVENANCE.md
LENGTH_SIGMA = 0.45  # log-normal spread that puts the 5th-95th percentile near 0.5x-2x the median


def cell_lengths(n: int, max_len: int, gen: torch.Generator, context: int) -> list[int]:
    """Token counts per cell (specials included), realistic in shape, capped at ``max_len``."""
    median = REAL_MEDIAN_GENES * max_len / context
    z = torch.randn(n, generator=gen)
    lengths = [int(min(max_len, max(8, round(median * math.exp(LENGTH_SIGMA * float(x)))))) for x in z]
    lengths[0] = max_len  # one full cell
    if n > 1 and all(length == max_len for length in lengths[1:]):
        lengths[-1] = max(8, max_len // 2)  # and at least one padded cell
    return lengths


def rank_value_cells(variant: Variant, n: int, max_len: int, seed: int) -> list[list[int]]:
    if max_len > variant.context:
        raise ValueError(f"{variant.name} takes at most {variant.context} tokens per cell, not {max_len}")
    gen = torch.Generator().manual_seed(seed)
    first_gene = len(variant.special_tokens)
    n_genes = variant.vocab_size - first_gene
    popularity = 1.0 / torch.arange(1, n_genes + 1, dtype=torch.float64) ** 0.8
    gene_order = torch.randperm(n_genes, generator=gen) + first_gene
    cells = []
    for length in cell_lengths(n, max_len, gen, variant.context):
        n_gene_tokens = length - (2 if variant.has_cls_eos else 0)
        picks = torch.multinomial(popularity, n_gene_tokens, replacement=False, generator=gen)
        genes = gene_order[picks].tolist()
        if variant.has_cls_eos:
            genes = [variant.special_tokens["<cls>"], *genes, variant.special_tokens["<eos>"]]
        cells.append(genes)
    return cells


def synthetic_batch(variant: Variant, n: int, max_len: int, seed: int, multiple: int = 1) -> Batch:
    """``n`` synthetic cells padded to the longest (= ``max_len``), rounded up to ``multiple``."""
    return collate(rank_value_cells(variant, n, max_len, seed), variant, multiple)
