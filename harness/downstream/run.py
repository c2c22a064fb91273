"""Downstream evaluation, HF and TE side by side: the runs, the paired folds, the records.

A *run* is one backend at one precision (``hf-sdpa@fp32``, ``te@bf16`` ...). Every run of a task
sees the same cells and the same folds, so its predictions pair item by item with the reference
run's (HF fp32, the ground truth) and with its HF peer at the same precision (HF has no FP8, so
an FP8 run's peer is HF bf16). A run this machine cannot do is recorded as skipped, with the reason.

Records (flat, one results file per task invocation), all with task/mode/variant/backend/precision:
  ``summary``    per run: fold mean ± SD and pooled metrics, items, seconds
  ``fold``       per run and fold
  ``prediction`` per run and item (gene or cell): label, probabilities, fold
  ``confusion``  per run, true class, predicted class (cell task)
  ``agreement``  per (run, reference): metric differences with bootstrap CIs, label agreement,
                 probability correlation, embedding cosine (probe mode)
  ``published``  the Geneformer paper's numbers, as a reference row (never ours)
  ``skipped``    a run this machine cannot do, with the reason
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np

from harness.backend_names import BACKENDS, backend_spec
from harness.capability import probe
from harness.downstream import agreement
from harness.downstream.classify import (
    Folds,
    confusion,
    fold_metrics,
    gene_folds,
    individual_folds,
    metrics,
    probe_scores,
    summarize,
)
from harness.downstream.dosage import gene_matrix
from harness.downstream.finetune import FineTuneConfig, finetune_cells, finetune_genes
from harness.downstream.tasks import CellTaskData, GeneTaskData
from harness.precision import PRECISIONS, Precision
from harness.progress import progress_bar
from harness.reasons import skipped
from harness.tolerances import downstream_bound
from models.errors import UsageError
from models.registry import Variant

PUBLISHED = {  # Geneformer example runs, gf-6L-30M (V1-10M) fine-tuned
    "dosage": {
        "roc_auc_mean": 0.9142,
        "roc_auc_sd": 0.0320,
        "note": "Geneformer example, gf-6L-30M fine-tuned, 5-fold CV over genes",
    },
    "cardiomyopathy": {
        "accuracy": 0.8642,
        "macro_f1": 0.8427,
        "note": "Geneformer example, gf-6L-30M fine-tuned, held-out individuals",
    },
}
TASK_MODES = ("probe", "finetune")


@dataclass(frozen=True)
class EvalRun:
    backend: str
    precision: Precision

    @property
    def name(self) -> str:
        return f"{self.backend}@{self.precision.name}"

    @property
    def is_hf(self) -> bool:
        return backend_spec(self.backend).family == "hf"

    @classmethod
    def parse(cls, text: str) -> "EvalRun":
        backend, sep, precision = text.partition("@")
        if not sep:
            raise UsageError(f"a run is BACKEND@PRECISION (e.g. te@bf16), not {text!r}")
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r} in {text!r}; known: {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r} in {text!r}; known: {', '.join(PRECISIONS)}")
        return cls(backend, PRECISIONS[precision])


REFERENCE = EvalRun.parse("hf-sdpa@fp32")


def default_runs(device: str) -> list[EvalRun]:
    """CPU: the reference and the TE-layout torch forward (the TE rows show as skipped);
    GPU: HF and TE at fp32 and bf16, and TE at FP8 (current scaling)."""
    te = [EvalRun.parse(r) for r in ("te@fp32", "te@bf16", "te@fp8-current")]
    if device == "cpu":
        return [REFERENCE, EvalRun.parse("te-format-torch@fp32"), *te]
    return [REFERENCE, EvalRun.parse("hf-sdpa@bf16"), *te]


def with_reference(runs: list[EvalRun]) -> list[EvalRun]:
    """The runs a user named, with the HF fp32 reference first: every comparison needs it."""
    return runs if REFERENCE in runs else [REFERENCE, *runs]


def _peer(run: EvalRun, runs: list[EvalRun]) -> EvalRun | None:
    """The HF run a non-HF run is judged against: HF at its precision (HF bf16 for FP8)."""
    hf = {r.precision.name: r for r in runs if r.is_hf}
    return hf.get(run.precision.peer)


def comparisons(runs: list[EvalRun]) -> list[tuple[EvalRun, EvalRun, bool]]:
    """(candidate, reference, judged): every run against HF fp32 (informative: how far the
    precision moves the answer), and every non-HF run against its HF peer (judged)."""
    pairs = []
    for r in runs:
        peer = None if r.is_hf else _peer(r, runs)
        if r != REFERENCE and peer != REFERENCE:
            pairs.append((r, REFERENCE, False))
        if peer is not None:
            pairs.append((r, peer, True))
    return pairs


def judge(row: dict, precision: Precision) -> dict:
    """pass when every metric difference to the HF peer is within the downstream bound."""
    worst = max(abs(row[f"{m}_diff"]) for m in agreement.METRICS if np.isfinite(row[f"{m}_diff"]))
    bound = downstream_bound(precision)
    return {"bound": bound, "worst_abs_diff": worst, "status": "pass" if worst <= bound else "fail"}


def _base(task: str, mode: str, variant: Variant, run: EvalRun, record: str) -> dict:
    return {
        "record": record,
        "task": task,
        "mode": mode,
        "variant": variant.name,
        "backend": run.backend,
        "precision": run.precision.name,
    }


class EvalRunner:
    """Builds each run's backend when needed (one model on the device at a time)."""

    def __init__(self, source, variant: Variant, device: str | None = None):
        self.source, self.variant = source, variant
        self.device = device or probe().device

    def runnable(self, runs: list[EvalRun], task: str, mode: str, records: list[dict], progress):
        """The runs this machine can do; each other run becomes a ``skipped`` record with its reason."""
        for run in runs:
            reason = probe().skip_reason(run.backend, run.precision)
            if reason is None:
                yield run
                continue
            records.append(skipped(_base(task, mode, self.variant, run, "skipped"), reason))
            progress(f"{task} {run.name:22s} skipped: {reason}")

    def backend(self, run: EvalRun):
        from harness.backends import build_backend

        return build_backend(run.backend, self.source, run.precision, self.device)

    @staticmethod
    def release() -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _classification_records(
    task: str,
    mode: str,
    variant: Variant,
    run: EvalRun,
    y: np.ndarray,
    proba: np.ndarray,
    folds: Folds,
    items: list[str],
    classes: list[str],
    seconds: float,
    extra: dict,
) -> list[dict]:
    folds_rows = fold_metrics(y, proba, folds)
    pooled = {f"pooled_{k}": v for k, v in metrics(y, proba).items()}
    records = [
        {
            **_base(task, mode, variant, run, "summary"),
            "status": "reported",
            "n_items": len(y),
            "n_folds": folds.n_folds,
            "split": folds.grouped_by or "stratified",
            **summarize(folds_rows),
            **pooled,
            "seconds": seconds,
            **extra,
        }
    ]
    records += [{**_base(task, mode, variant, run, "fold"), **row} for row in folds_rows]
    for i, item in enumerate(items):
        records.append(
            {
                **_base(task, mode, variant, run, "prediction"),
                "item": item,
                "label": classes[y[i]],
                "predicted": classes[int(proba[i].argmax())],
                "fold": int(folds.fold_of[i]),
                **{f"p_{c}": float(proba[i, k]) for k, c in enumerate(classes)},
            }
        )
    if len(classes) > 2:
        matrix = confusion(y, proba.argmax(axis=1), len(classes))
        records += [
            {
                **_base(task, mode, variant, run, "confusion"),
                "true": classes[a],
                "predicted": classes[b],
                "count": int(matrix[a, b]),
            }
            for a in range(len(classes))
            for b in range(len(classes))
        ]
    return records


def _agreement_records(task, mode, variant, runs_done, y, groups, embeddings, seed) -> list[dict]:
    records = []
    for cand, ref, judged in comparisons(list(runs_done)):
        row = {
            **_base(task, mode, variant, cand, "agreement"),
            "reference": ref.name,
            "judged": judged,
            **agreement.metric_differences(y, runs_done[ref], runs_done[cand], groups, seed=seed),
            **agreement.prediction_agreement(runs_done[ref], runs_done[cand]),
        }
        if cand in embeddings and ref in embeddings:
            row.update(agreement.embedding_agreement(embeddings[ref], embeddings[cand]))
        records.append({**row, **(judge(row, cand.precision) if judged else {"status": "reported"})})
    return records


def _published(task: str, mode: str, variant: Variant) -> dict:
    return {
        "record": "published",
        "task": task,
        "mode": mode,
        "variant": "V1-10M",
        "backend": "published",
        "precision": "n/a",
        **PUBLISHED[task],
    }


def evaluate_genes(
    data: GeneTaskData,
    runner: EvalRunner,
    runs: list[EvalRun],
    mode: str = "probe",
    n_folds: int = 5,
    seed: int = 0,
    emb_layer: int = -1,
    finetune: FineTuneConfig | None = None,
    progress=print,
) -> list[dict]:
    """The dosage-sensitivity task for every run; records as the module docstring lists."""
    from harness.embeddings import extract

    variant, task = runner.variant, "dosage"
    records, probas, vectors = [], {}, {}
    genes = y = folds = None
    for run in runner.runnable(runs, task, mode, records, progress):
        start = time.perf_counter()
        if mode == "probe":
            with progress_bar(len(data.cells), f"{run.name} gene embeddings") as bar:
                emb = extract(runner.backend(run), data.cells, variant, "gene", emb_layer, progress=bar.update)
            X, y_run, genes_run, missing = gene_matrix(emb.gene_tokens, emb.vectors, data.labels, data.token_ids)
            if genes is not None and genes_run != genes:
                raise RuntimeError(f"{run.name} saw different genes than the first run")
            genes, y, vectors[run] = genes_run, y_run, X
            if folds is None:
                folds = gene_folds(y, n_folds, seed)
            probas[run] = probe_scores(X, y, folds, 2)
        else:
            if genes is None:
                genes, y, missing = _genes_in_cells(data)
                folds = gene_folds(y, n_folds, seed)
            probas[run] = _finetune_gene_folds(
                data, runner, run, genes, y, folds, finetune or FineTuneConfig(seed=seed)
            )
        runner.release()
        seconds = time.perf_counter() - start
        extra = {
            "n_positive": int(y.sum()),
            "n_negative": int((y == 0).sum()),
            "labelled_genes_not_seen": missing,
            "n_cells": len(data.cells),
        }
        new = _classification_records(
            task, mode, variant, run, y, probas[run], folds, genes, ["insensitive", "sensitive"], seconds, extra
        )
        records += new
        s = new[0]
        progress(
            f"{task} {run.name:22s} ROC AUC {s['roc_auc_mean']:.4f} ± {s['roc_auc_sd']:.4f}  "
            f"accuracy {s['accuracy_mean']:.4f}  ({len(genes)} genes, {seconds:.1f} s)"
        )
    records += _agreement_records(task, mode, variant, probas, y, None, vectors, seed)
    return records + [_published(task, mode, variant)]


def _genes_in_cells(data: GeneTaskData):
    seen = {t for c in data.cells for t in c}
    keep = [
        (g, lab)
        for g, lab in zip(data.labels.genes, data.labels.labels)
        if g in data.token_ids and data.token_ids[g] in seen
    ]
    return [g for g, _ in keep], np.array([lab for _, lab in keep]), len(data.labels.genes) - len(keep)


def _finetune_gene_folds(data, runner, run, genes, y, folds, cfg) -> np.ndarray:
    tokens = np.array([data.token_ids[g] for g in genes])
    token_label = dict(zip(tokens.tolist(), y.tolist()))
    proba = np.zeros((len(genes), 2))
    for k in range(folds.n_folds):
        train, test = folds.split(k)
        proba[test], _ = finetune_genes(
            lambda: runner.backend(run),
            data.cells,
            runner.variant,
            token_label,
            set(tokens[train].tolist()),
            tokens[test].tolist(),
            cfg,
        )
        runner.release()
    return proba


def evaluate_cells(
    data: CellTaskData,
    runner: EvalRunner,
    runs: list[EvalRun],
    mode: str = "probe",
    n_folds: int = 5,
    seed: int = 0,
    emb_layer: int = -1,
    finetune: FineTuneConfig | None = None,
    progress=print,
) -> list[dict]:
    """The cardiomyopathy task (cell classification, split by individual) for every run."""
    from harness.embeddings import extract

    variant, task = runner.variant, "cardiomyopathy"
    folds = individual_folds(data.y, data.individuals, n_folds, seed)
    n_classes = len(data.classes)
    records, probas, vectors = [], {}, {}
    items = [f"cell_{i}" for i in range(len(data.cells))]
    for run in runner.runnable(runs, task, mode, records, progress):
        start = time.perf_counter()
        if mode == "probe":
            with progress_bar(len(data.cells), f"{run.name} cell embeddings") as bar:
                vectors[run] = extract(
                    runner.backend(run), data.cells, variant, "cell", emb_layer, progress=bar.update
                ).vectors
            probas[run] = probe_scores(vectors[run], data.y, folds, n_classes)
        else:
            cfg = finetune or FineTuneConfig(seed=seed)
            proba = np.zeros((len(data.y), n_classes))
            for k in range(folds.n_folds):
                train, test = folds.split(k)
                proba[test], _ = finetune_cells(
                    lambda: runner.backend(run), data.cells, variant, data.y, train, test, n_classes, cfg
                )
                runner.release()
            probas[run] = proba
        runner.release()
        seconds = time.perf_counter() - start
        extra = {"n_individuals": len(set(data.individuals)), "n_cells": len(data.cells)}
        new = _classification_records(
            task, mode, variant, run, data.y, probas[run], folds, items, data.classes, seconds, extra
        )
        records += new
        progress(
            f"{task} {run.name:22s} accuracy {new[0]['accuracy_mean']:.4f} ± {new[0]['accuracy_sd']:.4f}  "
            f"macro-F1 {new[0]['macro_f1_mean']:.4f}  ({len(items)} cells, {seconds:.1f} s)"
        )
    records += _agreement_records(task, mode, variant, probas, data.y, data.individuals, vectors, seed)
    return records + [_published(task, mode, variant)]


def evaluate_perturbation(
    data: CellTaskData,
    runner: EvalRunner,
    runs: list[EvalRun],
    start_class: str,
    goal_class: str,
    perturbation: str = "delete",
    n_genes: int = 20,
    max_cells: int = 16,
    emb_layer: int = -1,
    progress=print,
) -> list[dict]:
    """Perturb the ``n_genes`` genes most often expressed in ``start_class`` cells, in up to
    ``max_cells`` of them; shift toward the ``goal_class`` centroid (each run's own centroid)."""
    from collections import Counter

    from harness.downstream.perturb import perturb, shift_agreement
    from harness.embeddings import extract

    variant, task, mode = runner.variant, "perturb", perturbation
    for name in (start_class, goal_class):
        if name not in data.classes:
            raise UsageError(f"class {name!r} is not in the data (classes: {', '.join(data.classes)})")
    start_cells = [data.cells[i] for i in np.flatnonzero(data.y == data.classes.index(start_class))[:max_cells]]
    goal_cells = [data.cells[i] for i in np.flatnonzero(data.y == data.classes.index(goal_class))]
    specials = set(variant.special_tokens.values())
    counts = Counter(t for c in start_cells for t in c if t not in specials)
    genes = [t for t, _ in counts.most_common(n_genes)]
    records, results = [], {}
    for run in runner.runnable(runs, task, mode, records, progress):
        backend = runner.backend(run)
        goal = extract(backend, goal_cells, variant, "cell", emb_layer).vectors.mean(axis=0)
        perturb(backend, start_cells[:1], variant, genes[:2], goal, perturbation, emb_layer)  # warm-up
        wanted = set(genes)
        n_jobs = sum(t in wanted for c in start_cells for t in c)
        with progress_bar(n_jobs, f"{run.name} perturbations", unit="perturbation") as bar:
            res = results[run] = perturb(
                backend, start_cells, variant, genes, goal, perturbation, emb_layer, progress=bar.update
            )
        del backend
        runner.release()
        n = len(res.cos_shift)
        records.append(
            {
                **_base(task, mode, variant, run, "summary"),
                "status": "reported",
                "start_class": start_class,
                "goal_class": goal_class,
                "n_cells": len(start_cells),
                "n_genes": len(genes),
                "n_pairs": n,
                "seconds": res.seconds,
                "perturbations_per_s": n / res.seconds,
                "padding_fraction": 1 - res.real_tokens / res.padded_tokens,
                "noise_floor": res.noise_floor,
                "cos_shift_mean": float(res.cos_shift.mean()),
                "goal_shift_mean": float(res.goal_shift.mean()),
            }
        )
        records += [
            {
                **_base(task, mode, variant, run, "shift"),
                "cell": int(c),
                "gene_token": int(g),
                "cos_shift": float(cs),
                "goal_shift": float(gs),
            }
            for c, g, cs, gs in zip(res.cell, res.gene, res.cos_shift, res.goal_shift)
        ]
        progress(f"{task} {run.name:22s} {n} perturbations, {n / res.seconds:.1f}/s, noise floor {res.noise_floor:.2e}")
    for cand, ref, judged in comparisons(list(results)):
        records.append(
            {
                **_base(task, mode, variant, cand, "agreement"),
                "reference": ref.name,
                "judged": judged,
                "status": "reported",
                **shift_agreement(results[ref], results[cand]),
            }
        )
    return records
