"""Does a precision train Geneformer as well as bf16? Judged on data the model cannot memorize.

Training parity (``trajectory.py``) repeats one batch: a fast, deterministic regression check, but
over 200 steps the batch is memorized and the tail of the trajectory turns chaotic, so it cannot
say whether FP8 *trains* like bf16. Here every step draws fresh cells (a seeded pass over the
training cells, epoch after epoch), and what is judged is the loss (and accuracy) on held-out
cells no step ever trained on, at fixed steps, over several seeds:

* a seed fixes the random weights, the order of the cells and the MLM masks (and the classifier
  head), so a seed's reference and candidate runs start from the same weights and see the same
  batches, and different seeds differ in everything a user's two runs would;
* the reference is HF trained in mixed bf16 (``training=True``), as users train it; its seeds span
  the band a precision must stay in: at each evaluation step the candidate's held-out loss,
  averaged over the same seeds, must lie within [lowest, highest] of the reference's seeds,
  widened by the precision's allowance (``harness.tolerances.training_band_allowance``, a
  fraction of the reference's mean loss there); a
  candidate whose loss is not finite has diverged and fails;
* held-out cells are split once from the pool (seed 0), the same for every run; MLM masks on them
  are fixed per cell, so two evaluations differ only by the weights.

Both objectives of ``harness.training``: ``mlm`` (Geneformer's pretraining loss, held-out masked
tokens' cross-entropy and accuracy) and ``classify`` (the cell classifier on the labels of a
column of the tokenized cells: cross-entropy and accuracy on held-out cells). Dropout is off, as
everywhere in training parity.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

from harness.backends import build_backend
from harness.data.batching import collate
from harness.precision import get_precision
from harness.tolerances import training_band_allowance
from harness.training import LR, Trainee, adamw, masked_batch, optimizer_step
from models.errors import UsageError
from models.registry import Variant, get_variant

REFERENCE = "hf-sdpa"
REFERENCE_PRECISION = "bf16"
SPLIT_SEED = 0  # the held-out split: one for every run, so every run is evaluated on the same cells
EVAL_MASK_SEED = 10_000  # held-out MLM masks: fixed, apart from every training step's


@dataclass(frozen=True)
class BandSpec:
    variant: str
    objective: str = "mlm"
    candidate: str = "te"
    precisions: tuple[str, ...] = ("bf16",)
    reference: str = REFERENCE
    reference_precision: str = REFERENCE_PRECISION
    seeds: int = 3
    first_seed: int = 0  # seeds first_seed .. first_seed+seeds-1: more seeds can be added later, in parallel
    steps: int = 200
    eval_every: int = 25
    batch_cells: int = 8
    max_len: int = 512  # tokens per cell: its highest-ranked genes (a rank value encoding cut short)
    held_out: float = 0.2
    eval_cells: int = 64
    lr: float = LR  # the notebooks' 5e-5; another one asks where an instability starts


@dataclass
class CellPool:
    """Token lists (and, for the classifier, integer labels) split once into training and held-out cells."""

    train: list[list[int]]
    train_labels: list[int] | None
    held_out: list[list[int]]
    held_out_labels: list[int] | None
    classes: list[str] | None

    @classmethod
    def from_cells(cls, cells: list[list[int]], labels: list[str] | None, spec: BandSpec) -> "CellPool":
        if labels is not None and len(labels) != len(cells):
            raise UsageError(f"{len(labels)} labels for {len(cells)} cells")
        order = torch.randperm(len(cells), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        n_out = min(spec.eval_cells, max(1, round(spec.held_out * len(cells))))
        if len(cells) - n_out < spec.batch_cells:
            raise UsageError(
                f"{len(cells)} cells leave {len(cells) - n_out} to train on after {n_out} held out; "
                f"a batch takes {spec.batch_cells}: give more cells or a smaller --batch-cells"
            )
        out, kept = order[:n_out], order[n_out:]
        classes = sorted(set(labels)) if labels is not None else None
        if classes is not None and len(classes) < 2:
            raise UsageError(f"the label column holds one class ({classes[0]}): a classifier needs two or more")
        index = {c: i for i, c in enumerate(classes or [])}
        cut = [c[: spec.max_len] for c in cells]
        return cls(
            train=[cut[i] for i in kept],
            train_labels=None if labels is None else [index[labels[i]] for i in kept],
            held_out=[cut[i] for i in out],
            held_out_labels=None if labels is None else [index[labels[i]] for i in out],
            classes=classes,
        )

    def batches(self, steps: int, size: int, seed: int) -> list[list[int]]:
        """Each step's cell indices: seeded passes over the training cells, a fresh cell each
        time until a pass is used up (the model sees a cell again only an epoch later)."""
        gen = torch.Generator().manual_seed(seed)
        order: list[int] = []
        out = []
        for _ in range(steps):
            if len(order) < size:
                order += torch.randperm(len(self.train), generator=gen).tolist()
            out.append(order[:size])
            order = order[size:]
        return out


EVAL_CHUNK = 16  # held-out cells per evaluation forward (the MLM logits of 64 cells would take gigabytes)


def _loss_and_accuracy(trainee: Trainee, cells, labels, variant: Variant, multiple: int) -> tuple[float, float]:
    """Held-out loss and accuracy, without gradients, over every scored item (MLM: each masked
    token, with masks fixed per chunk of cells; the classifier: each cell)."""
    total = correct = count = 0.0
    with torch.no_grad():
        for start in range(0, len(cells), EVAL_CHUNK):
            batch = collate(cells[start : start + EVAL_CHUNK], variant, multiple=multiple).to(trainee.backend.device)
            if trainee.head is None:
                masked, target = masked_batch(batch, variant, EVAL_MASK_SEED + start)
                logits = trainee.backend.forward_with_grad(masked).float()
            else:
                logits = trainee.head(trainee.backend.final_hidden(batch))
                target = torch.tensor(labels[start : start + EVAL_CHUNK], device=logits.device)
            flat, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
            keep = target != -100
            total += float(torch.nn.functional.cross_entropy(flat[keep], target[keep], reduction="sum"))
            correct += float((flat[keep].argmax(-1) == target[keep]).sum())
            count += int(keep.sum())
    return total / count, correct / count


def _group(name: str) -> str:
    """A parameter's layer, in either layout: the first index in its name (``layer.3.``,
    ``layers.3.``), else its module (``bert.embeddings``, ``cls.predictions``, the classifier)."""
    match = re.search(r"\.(\d+)\.", name)
    return f"layer {int(match.group(1)):02d}" if match else ".".join(name.split(".")[:2])


def layer_norms(trainee: Trainee) -> dict[str, tuple[float, float]]:
    """Each layer's (gradient norm, weight norm) after a backward: where an instability starts."""
    sums: dict[str, list[float]] = {}
    for name, p in trainee.named_parameters().items():
        acc = sums.setdefault(_group(name), [0.0, 0.0])
        if p.grad is not None:
            acc[0] += float(p.grad.float().pow(2).sum())
        acc[1] += float(p.detach().float().pow(2).sum())
    return {g: (math.sqrt(a), math.sqrt(b)) for g, (a, b) in sums.items()}


def run_seed(
    backend_name: str, precision_name: str, model, pool: CellPool, spec: BandSpec, seed: int, trace: bool = False
) -> tuple[list[dict], list[dict]]:
    """One training run: fresh batches each step, held-out loss and accuracy every ``eval_every``
    steps (and before the first): (a row per evaluation, and with ``trace`` a row per step and
    layer with its gradient and weight norms; slow: one host sync per parameter)."""
    variant = get_variant(spec.variant)
    precision = get_precision(precision_name)
    backend = build_backend(backend_name, model, precision, training=True)
    classes = len(pool.classes) if pool.classes else None
    trainee = Trainee(backend, spec.objective, variant, seed, classes=classes)
    optimizer, schedule = adamw(trainee.named_parameters().values(), spec.steps, spec.lr)
    multiple = precision.token_multiple
    rows: list[dict] = []
    traced: list[dict] = []

    def evaluate(step: int, train_loss: float | None) -> None:
        loss, accuracy = _loss_and_accuracy(trainee, pool.held_out, pool.held_out_labels, variant, multiple)
        rows.append(
            {
                "step": step,
                "seed": seed,
                "backend": backend_name,
                "precision": precision_name,
                "held_out_loss": loss,
                "held_out_accuracy": accuracy,
                "train_loss": train_loss,
            }
        )

    evaluate(0, None)
    for step, picks in enumerate(pool.batches(spec.steps, spec.batch_cells, seed), start=1):
        batch = collate([pool.train[i] for i in picks], variant, multiple=multiple)
        labels = None if pool.train_labels is None else torch.tensor([pool.train_labels[i] for i in picks])
        loss = optimizer_step(lambda: trainee.loss(batch, step, labels=labels), optimizer)
        schedule.step()
        if trace:
            traced += [
                {"step": step, "seed": seed, "backend": backend_name, "precision": precision_name,
                 "layer": group, "grad_norm": g, "weight_norm": w, "train_loss": float(loss)}
                for group, (g, w) in layer_norms(trainee).items()
            ]  # fmt: skip
        if step % spec.eval_every == 0 or step == spec.steps:
            evaluate(step, float(loss))
    return rows, traced


def judge_band(reference: list[dict], candidate: list[dict], allowance: float) -> dict:
    """The candidate's held-out loss, averaged over seeds, within the reference seeds' band at every
    evaluation step, widened by ``allowance`` times the reference's mean loss there; the verdict
    with its worst step."""
    steps = sorted({r["step"] for r in reference})
    worst: dict = {"margin": -math.inf}
    for step in steps:
        ref = [r["held_out_loss"] for r in reference if r["step"] == step]
        cand = [r["held_out_loss"] for r in candidate if r["step"] == step]
        if not cand or not all(math.isfinite(x) for x in cand):
            diverged = f"diverged: held-out loss {cand} at step {step}"
            return {"status": "fail", "worst_step": step, "violations": diverged}
        mean, widen = sum(cand) / len(cand), allowance * sum(ref) / len(ref)
        lo, hi = min(ref) - widen, max(ref) + widen
        margin = max(lo - mean, mean - hi)  # > 0: outside the band by that many nats
        if margin > worst["margin"]:
            worst = {"margin": margin, "step": step, "mean": mean, "lo": min(ref), "hi": max(ref)}
    last = steps[-1]
    final = {
        "final_loss_reference": _mean(reference, last, "held_out_loss"),
        "final_loss_candidate": _mean(candidate, last, "held_out_loss"),
        "final_accuracy_reference": _mean(reference, last, "held_out_accuracy"),
        "final_accuracy_candidate": _mean(candidate, last, "held_out_accuracy"),
    }
    outside = worst["margin"] > 0
    return {
        "status": "fail" if outside else "pass",
        "worst_step": worst["step"],
        "worst_loss_candidate": worst["mean"],
        "band_low": worst["lo"],
        "band_high": worst["hi"],
        "allowance": allowance,
        "outside_by": max(0.0, worst["margin"]),
        **final,
        "violations": (
            f"held-out loss {worst['mean']:.4f} at step {worst['step']} outside the reference seeds' "
            f"[{worst['lo']:.4f}, {worst['hi']:.4f}] widened by {allowance:.0%} of their mean"
            if outside
            else ""
        ),
    }


def _mean(rows: list[dict], step: int, key: str) -> float:
    values = [r[key] for r in rows if r["step"] == step]
    return sum(values) / len(values)


def run_band(spec: BandSpec, pool: CellPool, progress=print, trace: bool = False) -> list[dict]:
    """Every seed of the reference and of each candidate precision, then a verdict per precision:
    ``band_point`` rows (one per run and evaluation), ``band_trace`` rows with ``trace``, and
    ``band_verdict`` records."""
    from models.hf import random_hf_model

    variant = get_variant(spec.variant)
    base = {"variant": spec.variant, "objective": spec.objective, "steps": spec.steps, "seeds": spec.seeds}
    runs: dict[tuple[str, str], list[dict]] = {}
    plan = [(spec.reference, spec.reference_precision)] + [(spec.candidate, p) for p in spec.precisions]
    records = []
    for seed in range(spec.first_seed, spec.first_seed + spec.seeds):
        model = random_hf_model(variant, seed)
        for backend, precision in plan:
            try:
                rows, traced = run_seed(backend, precision, model, pool, spec, seed, trace)
            except Exception as exc:  # a recipe that cannot train is a finding: recorded, the run goes on
                rows, traced = (
                    [{"step": 0, "seed": seed, "backend": backend, "precision": precision, "error": str(exc)}],
                    [],
                )
            records += [{**base, "record": "band_trace", **r} for r in traced]
            runs.setdefault((backend, precision), []).extend(rows)
            last = rows[-1]
            progress(
                f"{spec.variant} {spec.objective} seed {seed} {backend}@{precision}: "
                + (f"ERROR {last['error'][:200]}" if "error" in last else f"held-out loss {last['held_out_loss']:.4f}")
            )
    reference = runs[plan[0]]
    for (backend, precision), rows in runs.items():
        records += [{**base, "record": "band_point", **r} for r in rows if "error" not in r]
    mixed = " (mixed precision)" if get_precision(spec.reference_precision).mixed else ""
    for backend, precision in plan[1:]:
        rows = runs[(backend, precision)]
        context = {
            **base,
            "record": "band_verdict",
            "backend": backend,
            "precision": precision,
            "reference": f"{spec.reference}@{spec.reference_precision}{mixed}, {spec.seeds} seeds",
        }
        failed = [("the reference could not train: ", r) for r in reference if "error" in r]
        failed += [("", r) for r in rows if "error" in r]
        if failed:
            records.append({**context, "status": "error", "reason": (failed[0][0] + failed[0][1]["error"])[:300]})
        else:
            allowance = training_band_allowance(get_precision(precision))
            records.append({**context, **judge_band(reference, rows, allowance)})
    return records


def band_config(spec: BandSpec, pool: CellPool, sources: list[str]) -> dict:
    """The ``config`` block: the spec, the cells (sources, counts) and the optimizer."""
    from harness.training import MASK_FRACTION, WARMUP_FRACTION, WEIGHT_DECAY

    return {
        "spec": asdict(spec),
        "cells": {
            "sources": sources,
            "train": len(pool.train),
            "held_out": len(pool.held_out),
            "classes": pool.classes,
            "split_seed": SPLIT_SEED,
        },
        "optimizer": {"name": "AdamW", "lr": spec.lr, "warmup_fraction": WARMUP_FRACTION, "weight_decay": WEIGHT_DECAY},
        "mask_fraction": MASK_FRACTION,
    }
