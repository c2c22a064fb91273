"""Downstream evaluation in reports: HF and TE side by side, from ``downstream`` results only.

Tables: each run's task metrics (mean ± SD over folds), the judged and reported HF-vs-TE
agreement rows with their bootstrap intervals, the perturbation runs (speed, noise floor, shift
agreement), skipped runs with their reasons, and the published Geneformer numbers as a reference
that is never ours. Figures: ROC curves of the gene task per run; perturbation shifts of each
run against HF fp32.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from harness.verdict.checks import settle
from harness.verdict.downstream import downstream_checks, task_data
from reports.document import NOT_MEASURED, Figure, Section, Table, _fmt, _png, _records, to_markdown


def _run(rec: dict) -> str:
    return f"{rec['backend']}@{rec['precision']}"


def _weights(result: dict) -> str:
    w = result["weights"]
    return w.get("source") or f"checkpoint sha256 {str(w.get('sha256', '?'))[:12]}"


def _pm(rec: dict, key: str) -> str:
    return f"{rec[f'{key}_mean']:.4f} ± {rec[f'{key}_sd']:.4f}"


def _ci(rec: dict, key: str) -> str:
    return f"{rec[f'{key}_diff']:+.4f} [{rec[f'{key}_ci_low']:+.4f}, {rec[f'{key}_ci_high']:+.4f}]"


def _roc_figure(results: list[dict]) -> bytes | None:
    curves: defaultdict[tuple, defaultdict] = defaultdict(
        lambda: defaultdict(list)
    )  # (gpu, variant) -> run -> [(label, score)]
    for gpu, _r, rec in _records(results, "downstream", "prediction"):
        if rec["task"] == "dosage":
            curves[(gpu, rec["variant"])][_run(rec)].append((rec["label"] == "sensitive", rec["p_sensitive"]))
    if not curves:
        return None
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), squeeze=False)
    for ax, ((gpu, variant), runs) in zip(axes[0], sorted(curves.items())):
        for run, pairs in sorted(runs.items()):
            y, score = np.array(pairs).T
            fpr, tpr, _ = roc_curve(y.astype(int), score)
            ax.plot(fpr, tpr, label=run, lw=1.2, alpha=0.8)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{gpu} {variant}: dosage ROC (out-of-fold)", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7)
    return _png(fig)


def _shift_figure(results: list[dict]) -> bytes | None:
    shifts: defaultdict[tuple, dict] = defaultdict(dict)  # (gpu, variant) -> run -> goal shifts
    for gpu, _r, rec in _records(results, "downstream", "shift"):
        shifts[(gpu, rec["variant"])].setdefault(_run(rec), []).append(rec["goal_shift"])
    panels = [(k, v) for k, v in sorted(shifts.items()) if "hf-sdpa@fp32" in v]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, ((gpu, variant), runs) in zip(axes[0], panels):
        ref = np.array(runs["hf-sdpa@fp32"])
        for run, values in sorted(runs.items()):
            if run != "hf-sdpa@fp32":
                ax.scatter(ref, values, s=6, alpha=0.6, label=run)
        lim = [ref.min(), ref.max()]
        ax.plot(lim, lim, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{gpu} {variant}: shift toward goal", fontsize=9)
        ax.set_xlabel("HF fp32 goal shift")
        ax.set_ylabel("run's goal shift")
        ax.legend(fontsize=7)
    return _png(fig)


def downstream_section(results: list[dict]) -> Section:
    section = Section("Downstream: HF vs TE on the Geneformer tasks")
    summaries, agreements, perturb_rows, skipped, published = [], [], [], [], {}
    for gpu, r, rec in _records(results, "downstream", "summary"):
        data = task_data(r["config"])
        if rec["task"] == "perturb":
            perturb_rows.append(
                [
                    gpu,
                    rec["variant"],
                    rec["mode"],
                    _run(rec),
                    rec["n_pairs"],
                    _fmt(rec["perturbations_per_s"]),
                    _fmt(rec["padding_fraction"]),
                    _fmt(rec["noise_floor"]),
                    _weights(r),
                ]
            )
            continue
        summaries.append(
            [
                gpu,
                rec["task"],
                rec["variant"],
                rec["mode"],
                _run(rec),
                _pm(rec, "roc_auc"),
                _pm(rec, "accuracy"),
                _pm(rec, "macro_f1"),
                rec["n_items"],
                data,
                _weights(r),
            ]
        )
    for gpu, r, rec in _records(results, "downstream", "agreement"):
        if rec["task"] == "perturb":
            agreements.append(
                [
                    gpu,
                    rec["task"],
                    task_data(r["config"]),
                    rec["variant"],
                    _run(rec),
                    rec["reference"],
                    f"shift r {rec['goal_shift_pearson']:.4f}",
                    f"sign agreement {_fmt(rec['sign_agreement_above_floor'])} "
                    f"({rec['n_above_floor']}/{rec['n_pairs']} above floor)",
                    "",
                    "",
                    "reported",
                ]
            )
            continue
        agreements.append(
            [
                gpu,
                rec["task"],
                task_data(r["config"]),
                rec["variant"],
                _run(rec),
                rec["reference"],
                _ci(rec, "roc_auc"),
                _ci(rec, "accuracy"),
                _ci(rec, "macro_f1"),
                _fmt(rec["label_agreement"]),
                rec["status"].upper()
                + (f": {rec['reason']}" if rec.get("reason") else "")
                + (f" (bound {rec['bound']})" if "bound" in rec else ""),
            ]
        )
    for gpu, _r, rec in _records(results, "downstream", "skipped"):
        skipped.append([gpu, rec["task"], rec["variant"], _run(rec), rec["reason"]])
    for _gpu, _r, rec in _records(results, "downstream", "published"):
        published[rec["task"]] = rec
    if not (summaries or perturb_rows):
        section.text.append(f"{NOT_MEASURED}: no downstream results in this folder (run `gfqual eval`).")
        return section
    random = [r for r in results if r["kind"] == "downstream" and r["weights"].get("source") == "random-init"]
    if random:
        section.text.append(
            f"**Caveat: {len(random)} of these runs use seeded random weights, not Geneformer's trained ones.** Their "
            "AUCs and accuracies say nothing about biology or about the published model; they measure only whether "
            "TE answers as HF does on the same inputs. Synthetic tasks carry a planted signal any encoder can find. "
            "Compare the published rows below only with runs of the trained checkpoints."
        )
    section.text.append(
        "Every run of a task sees the same cells and folds; a TE run is judged against HF at its "
        "precision (HF bf16 for FP8). Intervals are paired bootstrap 95%, cells resampled by individual."
    )
    section.tables.append(
        Table(
            ["GPU", "task", "variant", "mode", "run", "ROC AUC", "accuracy", "macro-F1", "items", "data", "weights"],
            summaries,
        )
    )
    section.tables.append(
        Table(
            [
                "agreement: GPU",
                "task",
                "data",
                "variant",
                "run",
                "against",
                "Δ ROC AUC [95% CI]",
                "Δ accuracy [95% CI]",
                "Δ macro-F1 [95% CI]",
                "same label",
                "verdict",
            ],
            agreements,
        )
    )
    if perturb_rows:
        section.tables.append(
            Table(
                [
                    "perturbation: GPU",
                    "variant",
                    "mode",
                    "run",
                    "pairs",
                    "perturbations/s",
                    "padding",
                    "noise floor",
                    "weights",
                ],
                perturb_rows,
            )
        )
    if skipped:
        section.tables.append(Table(["skipped: GPU", "task", "variant", "run", "reason"], skipped))
    if published:
        section.tables.append(
            Table(
                ["published reference (not ours; gf-6L-30M, the V1-10M model, fine-tuned)", "numbers", "source"],
                [
                    [task, ", ".join(f"{k} {v}" for k, v in rec.items() if isinstance(v, float)), rec["note"]]
                    for task, rec in sorted(published.items())
                ],
            )
        )
    for name, png, caption in (
        ("downstream-roc.png", _roc_figure(results), "Dosage task: out-of-fold ROC per run"),
        (
            "downstream-shifts.png",
            _shift_figure(results),
            "In-silico perturbation: each run's shift toward the goal state against HF fp32's",
        ),
    ):
        if png:
            section.figures.append(Figure(name, png, caption, wide=True))
    return section


def downstream_verdict(results: list[dict]) -> str:
    """The downstream gate in one line, from the records through the verdict's one status rule."""
    checks, _superseded = settle(downstream_checks(results))
    if failing := [f"{c.gpu} {c.case}" for c in checks if c.failing]:
        return f"FAIL; {'; '.join(failing)}"
    return f"PASS; {len(checks)} HF-peer comparisons within bound" if checks else "NOT MEASURED"


def render_downstream_report(results: list[dict], out_dir: str | Path) -> Path:
    """Markdown + PNGs of the downstream section alone (``gfqual report-downstream``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "downstream.md"
    md.write_text(
        to_markdown(
            [downstream_section(results)],
            out,
            f"Geneformer downstream evaluation: HF vs TE (verdict: {downstream_verdict(results)})",
        )
    )
    return md
