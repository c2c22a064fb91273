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
* a band can only judge what the reference learned: when the reference's held-out loss did not
  fall, when the classifier's held-out accuracy is no better than always answering the most common
  class (``band_rule.LEARNED_MARGIN``), or when the MLM's held-out loss is no lower than the training cells'
  gene frequencies alone give (``unigram_loss``: a model that learned only how common each gene is),
  every precision "stays in the band" and the band says nothing about training Geneformer; such a
  verdict fails as *inconclusive* ("cannot judge"), never a pass; a band whose reference seeds
  themselves spike (a held-out loss climbing back >= 0.1 nats above its best), missed by no more
  than the spike, fails as *instability*: it measures the learning rate, not the precision (the
  rule and its thresholds: ``band_rule.py``);
* beside the band, each seed's candidate run is set against the reference run of the same seed
  (same weights, same batches): the worst paired gap says whether a recipe leaves the trajectory
  its seed's reference takes (a run that misses a drop the reference makes in one seed can still
  sit inside a band its other seeds widen); it is reported, the band decides;
* held-out cells are split once from the pool (seed 0), the same for every run; MLM masks on them
  are fixed per cell, so two evaluations differ only by the weights.

Both objectives of ``harness.training``: ``mlm`` (Geneformer's pretraining loss, held-out masked
tokens' cross-entropy and accuracy) and ``classify`` (the cell classifier on the labels of a
column of the tokenized cells: cross-entropy and accuracy on held-out cells). Dropout is off, as
everywhere in training parity.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from harness.backends import build_backend
from harness.data.batching import collate
from harness.parity.band_rule import judge_precision
from harness.precision import get_precision
from harness.reasons import error_reason
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

    @classmethod
    def from_config(cls, spec: dict) -> "BandSpec":
        """The spec a results file's ``config.spec`` holds (JSON keeps the precisions as a list)."""
        return cls(**{**spec, "precisions": tuple(spec["precisions"])})


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

    @property
    def majority_share(self) -> float | None:
        """The held-out share of the most common class: the accuracy of answering it every time."""
        if not self.held_out_labels:
            return None
        return max(self.held_out_labels.count(c) for c in set(self.held_out_labels)) / len(self.held_out_labels)

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


def unigram_loss(pool: CellPool, variant: Variant) -> float | None:
    """MLM's frequency baseline: the cross-entropy of the held-out cells' gene tokens under the
    training cells' gene frequencies (add-1/2 smoothing over the vocabulary). A model whose held-out
    MLM loss is not below it has learned how common each gene is, not which genes go together.
    (Held-out masks pick 15% of the genes plus each cell's first; all genes are counted here.)
    None for the classifier."""
    if pool.classes is not None:
        return None
    special = set(variant.special_tokens.values())
    counts: dict[int, int] = {}
    for cell in pool.train:
        for t in cell:
            if t not in special:
                counts[t] = counts.get(t, 0) + 1
    total = sum(counts.values()) + 0.5 * variant.vocab_size
    held = [t for cell in pool.held_out for t in cell if t not in special]
    return -sum(math.log((counts.get(t, 0) + 0.5) / total) for t in held) / len(held)


def baselines(pool: CellPool, variant: Variant) -> dict:
    """What the reference had to beat for a band to judge (``learned``), recorded in the config."""
    return {"majority_share": pool.majority_share, "unigram_loss": unigram_loss(pool, variant)}


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


def layer_group(name: str) -> str:
    """A parameter's layer, in either layout: the first index in its name (``layer.3.``,
    ``layers.3.``), else its module (``bert.embeddings``, ``cls.predictions``, the classifier)."""
    match = re.search(r"\.(\d+)\.", name)
    return f"layer {int(match.group(1)):02d}" if match else ".".join(name.split(".")[:2])


def grouped_square_sums(named) -> tuple[list[str], torch.Tensor]:
    """Per layer (``layer_group``), the sum of squares of each of a parameter's tensors (``named``:
    (name, (tensor or None, ...)) with as many tensors for every name; None adds nothing): (the
    layers, a [layers, tensors] float32 tensor on the device), for one host copy a step."""
    sums: dict[str, list[torch.Tensor]] = {}
    for name, tensors in named:
        ref = next(t for t in tensors if t is not None)
        acc = sums.setdefault(layer_group(name), [ref.new_zeros((), dtype=torch.float32)] * len(tensors))
        for i, t in enumerate(tensors):
            if t is not None:
                acc[i] = acc[i] + t.float().pow(2).sum()
    return list(sums), torch.stack([torch.stack(acc) for acc in sums.values()])


def layer_norms(trainee: Trainee) -> dict[str, tuple[float, float]]:
    """Each layer's (gradient norm, weight norm) after a backward: where an instability starts.
    Summed on the device and copied once (one host sync a step, not one per parameter)."""
    groups, sums = grouped_square_sums((n, (p.grad, p.detach())) for n, p in trainee.named_parameters().items())
    return {g: (grad, weight) for g, (grad, weight) in zip(groups, sums.sqrt().tolist())}


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


def _finished_runs(partial: Path | None, identity: dict) -> dict[str, dict]:
    """The runs an interrupted ``run_band`` of the same band finished (``partial``'s lines after
    its identity line), by key; a file of another band is refused, never mixed in."""
    if partial is None or not partial.exists():
        return {}
    lines = partial.read_text().splitlines()
    if not lines or json.loads(lines[0]) != {"band": identity}:
        raise UsageError(
            f"{partial} holds the finished runs of another band (other spec, cells or --trace): "
            "give another --out, or delete it to start this band afresh"
        )
    done = {}
    for line in lines[1:]:
        try:
            run = json.loads(line)
        except json.JSONDecodeError:  # the line a kill cut short: that run is run again
            continue
        done[run["key"]] = run
    return done


def run_band(
    spec: BandSpec, pool: CellPool, progress=print, trace: bool = False, partial: Path | None = None
) -> list[dict]:
    """Every seed of the reference and of each candidate precision, then a verdict per precision:
    ``band_point`` rows (one per run and evaluation), ``band_trace`` rows with ``trace``, and
    ``band_verdict`` records. With ``partial``, each finished run is appended there as it ends,
    and the runs a killed or interrupted call of the same band left there are not run again."""
    from models.hf import random_hf_model

    variant = get_variant(spec.variant)
    base = {"variant": spec.variant, "objective": spec.objective, "steps": spec.steps, "seeds": spec.seeds}
    identity = json.loads(
        json.dumps({"spec": asdict(spec), "trace": trace, "cells": [len(pool.train), len(pool.held_out)]})
    )
    done = _finished_runs(partial, identity)
    if done:
        progress(f"resuming {partial}: {len(done)} runs already finished")
    runs: dict[tuple[str, str], list[dict]] = {}
    plan = [(spec.reference, spec.reference_precision)] + [(spec.candidate, p) for p in spec.precisions]
    records = []
    with open(partial, "a") if partial is not None else contextlib.nullcontext() as log:
        if log is not None and not done:
            log.write(json.dumps({"band": identity}) + "\n")
        for seed in range(spec.first_seed, spec.first_seed + spec.seeds):
            keys = {(b, pr): f"{seed}/{b}/{pr}" for b, pr in plan}
            model = None if all(k in done for k in keys.values()) else random_hf_model(variant, seed)
            for backend, precision in plan:
                key = keys[(backend, precision)]
                if key in done:
                    rows, traced = done[key]["rows"], done[key]["traced"]
                else:
                    try:
                        rows, traced = run_seed(backend, precision, model, pool, spec, seed, trace)
                    except Exception as exc:  # a recipe that cannot train is a finding: recorded, the run goes on
                        rows = [{"step": 0, "seed": seed, "backend": backend, "precision": precision,
                                 "error": error_reason(exc)}]  # fmt: skip
                        traced = []
                    if log is not None:
                        log.write(json.dumps({"key": key, "rows": rows, "traced": traced}) + "\n")
                        log.flush()
                records += [{**base, "record": "band_trace", **r} for r in traced]
                runs.setdefault((backend, precision), []).extend(rows)
                last = rows[-1]
                progress(
                    f"{spec.variant} {spec.objective} seed {seed} {backend}@{precision}: "
                    + (f"ERROR {last['error']}" if "error" in last else f"held-out loss {last['held_out_loss']:.4f}")
                )
    for (backend, precision), rows in runs.items():
        records += [{**base, "record": "band_point", **r} for r in rows if "error" not in r]
    return records + band_verdicts(spec, runs, pool)


def band_verdicts(spec: BandSpec, runs: dict[tuple[str, str], list[dict]], pool: CellPool) -> list[dict]:
    """A ``band_verdict`` per candidate precision, from every run's held-out rows (``runs``: keyed by
    backend and precision; a row with ``error`` is a run that could not train)."""
    base = {"variant": spec.variant, "objective": spec.objective, "steps": spec.steps, "seeds": spec.seeds}
    base["lr"] = spec.lr  # a band at another learning rate is another test (the verdict's case names it)
    reference = runs[(spec.reference, spec.reference_precision)]
    mixed = " (mixed precision)" if get_precision(spec.reference_precision).mixed else ""
    beat = baselines(pool, get_variant(spec.variant))  # once: it counts every training token
    records = []
    for precision in spec.precisions:
        rows = runs.get((spec.candidate, precision), [])
        context = {
            **base,
            "record": "band_verdict",
            "backend": spec.candidate,
            "precision": precision,
            "reference": f"{spec.reference}@{spec.reference_precision}{mixed}, {spec.seeds} seeds",
        }
        failed = [("the reference could not train: ", r) for r in reference if "error" in r]
        failed += [("", r) for r in rows if "error" in r]
        if failed:
            records.append({**context, "status": "error", "reason": failed[0][0] + failed[0][1]["error"]})
        else:
            records.append({**context, **judge_precision(reference, rows, precision, beat, len(pool.held_out))})
    return records
