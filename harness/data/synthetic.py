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
import os

import numpy as np

from harness.data.tokenizer import Dictionaries
from models.errors import UsageError
from models.registry import Variant

REAL_MEDIAN_GENES = 1209  # celltypist sample, shared/data/scrna/PROVENANCE.md
LENGTH_SIGMA = 0.45  # log-normal spread that puts the 5th-95th percentile near 0.5x-2x the median


def cell_lengths(n: int, max_len: int, gen, context: int) -> list[int]:
    """Token counts per cell (specials included), realistic in shape, capped at ``max_len``
    (``gen``: a torch.Generator)."""
    import torch  # here, not at the top: gfqual synth writes counts with numpy alone

    median = REAL_MEDIAN_GENES * max_len / context
    z = torch.randn(n, generator=gen)
    lengths = [int(min(max_len, max(8, round(median * math.exp(LENGTH_SIGMA * float(x)))))) for x in z]
    lengths[0] = max_len  # one full cell
    if n > 1 and all(length == max_len for length in lengths[1:]):
        lengths[-1] = max(8, max_len // 2)  # and at least one padded cell
    return lengths


def rank_value_cells(variant: Variant, n: int, max_len: int, seed: int, full: bool = False) -> list[list[int]]:
    """``n`` cells of realistic lengths up to ``max_len`` (or all exactly ``max_len`` when ``full``)."""
    import torch

    if max_len > variant.context:
        raise UsageError(f"{variant.name} takes at most {variant.context} tokens per cell, not {max_len}")
    gen = torch.Generator().manual_seed(seed)
    first_gene = len(variant.special_tokens)
    n_genes = variant.vocab_size - first_gene
    popularity = 1.0 / torch.arange(1, n_genes + 1, dtype=torch.float64) ** 0.8
    gene_order = torch.randperm(n_genes, generator=gen) + first_gene
    cells = []
    lengths = [max_len] * n if full else cell_lengths(n, max_len, gen, variant.context)
    for length in lengths:
        n_gene_tokens = length - (2 if variant.has_cls_eos else 0)
        picks = torch.multinomial(popularity, n_gene_tokens, replacement=False, generator=gen)
        genes = gene_order[picks].tolist()
        if variant.has_cls_eos:
            genes = [variant.special_tokens["<cls>"], *genes, variant.special_tokens["<eos>"]]
        cells.append(genes)
    return cells


def synthetic_batch(variant: Variant, n: int, max_len: int, seed: int, multiple: int = 1):
    """``n`` synthetic cells padded to the longest (= ``max_len``), rounded up to ``multiple``."""
    from harness.data.batching import collate

    return collate(rank_value_cells(variant, n, max_len, seed), variant, multiple)


# --- synthetic count matrices -----------------------------------------------------------------

SYNTHETIC_GENE_PREFIX = "ENSGSYN"


def synthetic_dictionaries(variant: Variant, seed: int = 0):
    """Token and median dictionaries of the variant's size over made-up Ensembl IDs, for runs
    without the real Geneformer dictionaries. Medians are log-normal around 1, as real ones are."""
    rng = np.random.default_rng(seed)
    n_genes = variant.vocab_size - len(variant.special_tokens)
    genes = [f"{SYNTHETIC_GENE_PREFIX}{i:08d}" for i in range(n_genes)]
    tokens = {**variant.special_tokens, **{g: i + len(variant.special_tokens) for i, g in enumerate(genes)}}
    medians = dict(zip(genes, np.exp(rng.normal(0.0, 1.0, n_genes)).tolist()))
    return Dictionaries(variant.dictionary_family, tokens, medians)


BYTES_PER_VALUE = 40  # the generator holds ~5 dense float64 / int64 copies of the cells × genes matrix


def check_synthetic_size(n_cells: int, n_genes: int) -> None:
    """Refuse, before any work, a synthetic matrix this machine cannot hold (it is built dense)."""
    need = n_cells * n_genes * BYTES_PER_VALUE
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    free = pages * os.sysconf("SC_PAGE_SIZE") if pages else None
    if free is not None and need > free:
        raise UsageError(
            f"--cells {n_cells} × --genes {n_genes} needs about {need / 2**30:,.1f} GiB while building the counts; "
            f"this machine has {free / 2**30:,.1f} GiB free: lower --cells (or --genes), or write several files"
        )


def synthetic_anndata(
    dicts,
    n_cells: int = 240,
    n_states: int = 3,
    n_individuals: int = 6,
    n_genes: int = 4000,
    program_size: int = 40,
    program_fold: float = 8.0,
    seed: int = 0,
    exclusive: bool = False,
    state_names: tuple[str, ...] | None = None,
    labelled_genes: tuple[int, int] | None = None,
):
    """Raw counts with planted cell states, for the offline pipeline.

    Genes: ``n_genes`` drawn from the dictionaries' vocabulary. Expression: a log-normal baseline
    profile; each state multiplies its own program of ``program_size`` genes by ``program_fold``
    (``exclusive``: and the program is silent in the other states, as marker genes are).
    ``labelled_genes=(p, n)`` also plants a gene-level label, for the gene-classification task:
    each of ``p`` "positive" genes is switched on in a random tenth of the cells, far above every
    other gene, so wherever it is expressed it takes one of the first ranks; ``n`` "negative" genes
    are ordinary, broadly expressed genes. A random-weight model carries a gene's rank only
    through its position embeddings, so this is the signal such a model can pass to a probe.
    """
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    vocab = sorted(g for g in dicts.token_ids if g in dicts.medians)
    genes = np.asarray(vocab)[rng.choice(len(vocab), size=min(n_genes, len(vocab)), replace=False)]
    if n_states * program_size > len(genes):
        raise UsageError(
            f"{len(genes)} genes are too few for {n_states} states of {program_size} program genes each: "
            f"give at least {n_states * program_size} genes (--genes), or fewer states (--states)"
        )
    baseline = np.exp(rng.normal(0.0, 1.5, len(genes)))
    programs = rng.choice(len(genes), size=(n_states, program_size), replace=False)
    states = np.arange(n_cells) % n_states
    individuals = (np.arange(n_cells) // n_states) % n_individuals
    profile = np.tile(baseline, (n_cells, 1))
    for s in range(n_states):
        profile[np.ix_(states == s, programs[s])] *= program_fold
        if exclusive:
            profile[np.ix_(states != s, programs[s])] = 0.0
    if labelled_genes:
        positive, negative = labelled_genes
        by_level = np.argsort(-baseline)
        free = by_level[~np.isin(by_level, programs.ravel())]
        if positive + negative > len(free) // 4:
            raise UsageError(f"{len(genes)} genes are too few for {positive}+{negative} labelled genes")
        pos, neg = free[-positive:], free[len(free) // 4 : len(free) // 4 + negative]
        on = rng.random((n_cells, positive)) < 0.1
        profile[:, pos] = np.where(on, 50.0 * baseline.max(), 0.0)
    profile /= profile.sum(axis=1, keepdims=True)
    library = np.exp(rng.normal(np.log(4000), 0.5, n_cells))
    mean = profile * library[:, None]
    counts = rng.poisson(rng.gamma(shape=0.5, scale=mean / 0.5))
    X = sp.csr_matrix(counts.astype(np.int32))
    names = state_names or tuple(f"state_{s}" for s in range(n_states))
    if len(names) != n_states:
        raise UsageError(f"{n_states} states but {len(names)} state names")
    obs = pd.DataFrame(
        {
            "cell_state": [names[s] for s in states],
            "individual": [f"donor_{i}" for i in individuals],
            "n_counts": np.asarray(X.sum(axis=1)).ravel(),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"ensembl_id": genes}, index=[f"GENE{i}" for i in range(len(genes))])
    adata = anndata.AnnData(X=X, obs=obs, var=var)
    adata.uns["synthetic"] = {
        "seed": seed,
        "programs": {names[s]: genes[programs[s]].tolist() for s in range(n_states)},
        "note": "synthetic counts with planted cell-state programs; not biological data",
    }
    if labelled_genes:
        adata.uns["synthetic"]["gene_labels"] = {"positive": genes[pos].tolist(), "negative": genes[neg].tolist()}
    return adata
