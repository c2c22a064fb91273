"""Dosage-sensitive vs insensitive transcription factors (the Geneformer paper's gene task):
the label file and the gene × embedding matrix the classifiers take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import UsageError


@dataclass
class GeneLabels:
    genes: list[str]
    labels: np.ndarray  # 1 = dosage-sensitive, 0 = insensitive


def load_labels(path: str | Path) -> GeneLabels:
    """The two-column CSV of the Geneformer example (dosage_sensitive, dosage_insensitive)."""
    import pandas as pd

    frame = pd.read_csv(path)
    expected = {"dosage_sensitive", "dosage_insensitive"}
    if not expected <= set(frame.columns):
        raise UsageError(f"{path}: expected columns {sorted(expected)}, found {list(frame.columns)}")
    sensitive = [str(g) for g in frame["dosage_sensitive"].dropna()]
    insensitive = [str(g) for g in frame["dosage_insensitive"].dropna()]
    both = set(sensitive) & set(insensitive)
    if both:
        raise UsageError(f"{path}: {len(both)} genes are labelled both ways (e.g. {sorted(both)[0]})")
    return GeneLabels(sensitive + insensitive, np.array([1] * len(sensitive) + [0] * len(insensitive)))


def gene_matrix(gene_tokens: np.ndarray, vectors: np.ndarray, labels: GeneLabels, token_ids: dict[str, int]):
    """The labelled genes that occurred in the cells: (X, y, ensembl ids, genes missing)."""
    row_of = {int(t): i for i, t in enumerate(gene_tokens)}
    keep = [(g, y) for g, y in zip(labels.genes, labels.labels) if g in token_ids and token_ids[g] in row_of]
    missing = len(labels.genes) - len(keep)
    X = np.stack([vectors[row_of[token_ids[g]]] for g, _ in keep]) if keep else np.zeros((0, vectors.shape[1]))
    return X, np.array([y for _, y in keep]), [g for g, _ in keep], missing
