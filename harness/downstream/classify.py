"""The classification machinery both downstream tasks share: folds, the probe, metrics.

Folds are made once per dataset and reused by every backend and precision, so HF and TE rows are
paired item by item (same genes or cells in the same test fold). Genes: stratified k-fold, as the
Geneformer examples split the dosage genes. Cells: stratified k-fold *grouped by individual*, so no
donor has cells on both sides of a split (a classifier could otherwise recognise the donor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import UsageError


@dataclass
class Folds:
    """``fold_of[i]``: the test fold of item i (each item is tested exactly once)."""

    fold_of: np.ndarray
    grouped_by: str | None = None

    @property
    def n_folds(self) -> int:
        return int(self.fold_of.max()) + 1

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.flatnonzero(self.fold_of != k), np.flatnonzero(self.fold_of == k)


def gene_folds(y: np.ndarray, folds: int = 5, seed: int = 0) -> Folds:
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    if counts.min() < folds:
        raise UsageError(
            f"each class needs at least {folds} items for {folds}-fold cross-validation; "
            f"class sizes are {counts.tolist()}"
        )
    fold_of = np.empty(len(y), dtype=int)
    for k, (_, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)):
        fold_of[test] = k
    return Folds(fold_of)


def individual_folds(y: np.ndarray, individuals: np.ndarray, folds: int = 5, seed: int = 0) -> Folds:
    """Stratified folds in which every individual's cells share one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    donors = np.unique(individuals)
    if len(donors) < folds:
        raise UsageError(
            f"{len(donors)} individuals cannot be split into {folds} folds by individual; "
            f"lower --folds or add individuals"
        )
    fold_of = np.empty(len(y), dtype=int)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(y, y, individuals)):
        fold_of[test] = k
    for donor in donors:  # the property the split exists for; checked, not assumed
        if len(set(fold_of[individuals == donor])) != 1:
            raise AssertionError(f"individual {donor} landed in two folds")
    return Folds(fold_of, grouped_by="individual")


def probe_scores(X: np.ndarray, y: np.ndarray, folds: Folds, n_classes: int) -> np.ndarray:
    """Out-of-fold class probabilities [n, n_classes] of a standardised logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    proba = np.zeros((len(y), n_classes))
    for k in range(folds.n_folds):
        train, test = folds.split(k)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
        model.fit(X[train], y[train])
        proba[np.ix_(test, model.classes_)] = model.predict_proba(X[test])
    return proba


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary: AUC of the positive class; multiclass: macro one-vs-rest. NaN when a class is absent."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    if len(np.unique(y)) < proba.shape[1]:
        return float("nan")
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def metrics(y: np.ndarray, proba: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    pred = proba.argmax(axis=1)
    return {
        "roc_auc": roc_auc(y, proba),
        "accuracy": float(accuracy_score(y, pred)),
        # over the classes present (true or predicted): a fold without a class has no F1 for it
        "macro_f1": float(f1_score(y, pred, average="macro", labels=np.union1d(y, pred), zero_division=0)),
    }


def fold_metrics(y: np.ndarray, proba: np.ndarray, folds: Folds) -> list[dict]:
    rows = []
    for k in range(folds.n_folds):
        _, test = folds.split(k)
        rows.append({"fold": k, "n_test": len(test), **metrics(y[test], proba[test])})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean ± SD over folds (the Geneformer papers report AUC this way)."""
    out = {}
    for key in ("roc_auc", "accuracy", "macro_f1"):
        values = np.array([r[key] for r in rows], dtype=float)
        values = values[np.isfinite(values)]
        out[f"{key}_mean"] = float(values.mean()) if len(values) else float("nan")
        out[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (y, pred), 1)
    return matrix
