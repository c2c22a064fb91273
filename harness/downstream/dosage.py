"""Dosage-sensitive vs insensitive transcription factors: the fast probe of the Geneformer paper's
gene-classification task.

Contextual gene embeddings (``harness.embeddings`` gene mode: each gene's embedding averaged over
every cell position it takes) are classified with a logistic-regression probe under stratified
5-fold cross-validation over genes (StratifiedKFold, shuffled with a fixed seed; a gene is in
exactly one test fold). Per fold: ROC AUC, accuracy, macro-F1. The same folds serve every
backend, so HF and TE rows are paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Published reference (Geneformer examples, gf-6L-30M fine-tuned, 5 folds): shown beside our
# rows, never as our result.
PUBLISHED = {"model": "gf-6L-30M (V1-10M) fine-tuned, Geneformer example run", "roc_auc_mean": 0.9142, "roc_auc_sd": 0.0320}


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
        raise ValueError(f"{path}: expected columns {sorted(expected)}, found {list(frame.columns)}")
    sensitive = [str(g) for g in frame["dosage_sensitive"].dropna()]
    insensitive = [str(g) for g in frame["dosage_insensitive"].dropna()]
    both = set(sensitive) & set(insensitive)
    if both:
        raise ValueError(f"{path}: {len(both)} genes are labelled both ways (e.g. {sorted(both)[0]})")
    return GeneLabels(sensitive + insensitive, np.array([1] * len(sensitive) + [0] * len(insensitive)))


def probe_cv(X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> list[dict]:
    """Per-fold metrics of a standardised logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if min(np.bincount(y, minlength=2)) < folds:
        raise ValueError(f"each class needs at least {folds} genes for {folds}-fold cross-validation")
    rows = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(X, y)):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
        model.fit(X[train], y[train])
        score = model.predict_proba(X[test])[:, 1]
        pred = (score >= 0.5).astype(int)
        rows.append({
            "fold": fold, "n_test": len(test), "roc_auc": roc_auc_score(y[test], score),
            "accuracy": accuracy_score(y[test], pred), "macro_f1": f1_score(y[test], pred, average="macro"),
        })
    return rows


def gene_matrix(gene_tokens: np.ndarray, vectors: np.ndarray, labels: GeneLabels, token_ids: dict[str, int]):
    """The labelled genes that occurred in the cells: (X, y, ensembl ids, genes missing)."""
    row_of = {int(t): i for i, t in enumerate(gene_tokens)}
    keep = [(g, y) for g, y in zip(labels.genes, labels.labels) if g in token_ids and token_ids[g] in row_of]
    missing = len(labels.genes) - len(keep)
    X = np.stack([vectors[row_of[token_ids[g]]] for g, _ in keep]) if keep else np.zeros((0, vectors.shape[1]))
    return X, np.array([y for _, y in keep]), [g for g, _ in keep], missing


def summarize(rows: list[dict]) -> dict:
    auc = np.array([r["roc_auc"] for r in rows])
    return {
        "roc_auc_mean": float(auc.mean()), "roc_auc_sd": float(auc.std(ddof=1)) if len(auc) > 1 else 0.0,
        "accuracy_mean": float(np.mean([r["accuracy"] for r in rows])),
        "macro_f1_mean": float(np.mean([r["macro_f1"] for r in rows])),
    }
