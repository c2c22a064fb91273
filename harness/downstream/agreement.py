"""HF vs TE agreement on a downstream task: does the candidate give the same answer?

Three views, from the paired out-of-fold predictions of two runs (same items, same folds):
  * metric difference (candidate − reference) with a paired bootstrap 95% interval; items are
    resampled together for both runs, and cells are resampled by individual (a cluster
    bootstrap), since cells of one donor are not independent;
  * prediction agreement: the fraction of items given the same label, and the correlation of
    the predicted probabilities;
  * embedding agreement: per-item cosine similarity of the two runs' embeddings.
"""

from __future__ import annotations

import numpy as np

from harness.downstream.classify import metrics

BOOTSTRAP_SAMPLES = 1000
METRICS = ("roc_auc", "accuracy", "macro_f1")


def _resample_indices(n: int, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if groups is None:
        return rng.integers(0, n, n)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    picks = rng.integers(0, len(members), len(members))
    return np.concatenate([members[p] for p in picks])


def metric_differences(
    y: np.ndarray,
    reference: np.ndarray,
    candidate: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict:
    """``{metric}_diff`` and its 95% ``_ci_low``/``_ci_high`` over pooled out-of-fold predictions."""
    point_ref, point_cand = metrics(y, reference), metrics(y, candidate)
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRICS}
    for _ in range(n_boot):
        idx = _resample_indices(len(y), groups, rng)
        a, b = metrics(y[idx], reference[idx]), metrics(y[idx], candidate[idx])
        for m in METRICS:
            draws[m].append(b[m] - a[m])
    out = {}
    for m in METRICS:
        values = np.asarray(draws[m], dtype=float)
        values = values[np.isfinite(values)]
        out[f"{m}_reference"] = point_ref[m]
        out[f"{m}_candidate"] = point_cand[m]
        out[f"{m}_diff"] = point_cand[m] - point_ref[m]
        out[f"{m}_ci_low"], out[f"{m}_ci_high"] = (
            (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))) if len(values) else (np.nan, np.nan)
        )
    return out


def prediction_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    a, b = reference.ravel(), candidate.ravel()
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {
        "label_agreement": float(same.mean()),
        "n_disagree": int((~same).sum()),
        "proba_pearson": corr,
        "proba_max_abs_diff": float(np.abs(a - b).max()),
    }


def embedding_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cos = (a * b).sum(axis=1)
    return {"embedding_cos_mean": float(cos.mean()), "embedding_cos_min": float(cos.min())}
