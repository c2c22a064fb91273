"""Training Geneformer as its notebooks do: the objectives, AdamW with linear warm-up, and one
optimizer step as the unit both training parity and the training throughput sweep run.

Two objectives (``OBJECTIVES``), each a ``Trainee``'s loss:

* ``mlm``, Geneformer's pretraining: a seeded 15% of gene tokens replaced by ``<mask>`` and the
  cross-entropy of the original tokens there (a fresh mask each step);
* ``classify``, cell-classifier fine-tuning as Geneformer's ``Classifier`` does it, through
  ``BertForSequenceClassification``: a pooler (dense layer and tanh on the first token's hidden
  state) and a linear classifier over the encoder, the cross-entropy of seeded cell labels. The
  head is seeded, so every model starts from the same one; it computes in fp32 on the encoder's
  output, outside any autocast (it sees one token per cell).

Models train in eval mode (dropout off), so HF and TE train the same deterministic function (TE's
dropout draws from its own RNG: dropout on could not give HF and TE the same masks). The backends
train in mixed precision as users run it (``Backend`` built with ``training=True``;
``Precision.mixed``): fp32 master weights, the products at bf16 under ``torch.autocast`` (and TE's
FP8 autocast for FP8 recipes).
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch

from harness.backend_names import OBJECTIVES
from harness.backends import Backend
from harness.data.batching import Batch, PackedBatch
from models.registry import Variant

MASK_FRACTION = 0.15  # Geneformer's pretraining masks 15% of gene tokens
CLASSES = 3  # seeded cell labels of the classification objective
HEAD_PREFIX = "classifier."  # the classification head's parameters, beside the model's
MLM_HEAD_PREFIX = "cls."  # the MLM head (both layouts): BertForSequenceClassification has none to train
LR, WARMUP_FRACTION, WEIGHT_DECAY = 5e-5, 0.1, 0.001  # the notebooks' AdamW (warm-up as a fraction of the steps)
AnyBatch = TypeVar("AnyBatch", Batch, PackedBatch)


def masked_batch(batch: AnyBatch, variant: Variant, seed: int) -> tuple[AnyBatch, torch.Tensor]:
    """(the batch with a seeded 15% of its gene tokens replaced by <mask>, the labels: the original
    token there and -100 elsewhere). A padded batch gets at least one masked token per cell, so
    every cell has a loss; packed batches (training throughput) hold thousands of gene tokens."""
    gen = torch.Generator().manual_seed(seed)
    genes = batch.gene_mask.bool().cpu()
    ids = batch.input_ids.cpu()
    chosen = (torch.rand(genes.shape, generator=gen) < MASK_FRACTION) & genes
    if isinstance(batch, Batch):
        chosen[torch.arange(len(chosen)), genes.float().argmax(dim=1)] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    masked = dataclasses.replace(batch, input_ids=ids.masked_fill(chosen, variant.special_tokens["<mask>"]))
    device = batch.input_ids.device
    return masked.to(device), labels.to(device)


def mlm_loss(backend: Backend, batch: Batch | PackedBatch, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the original tokens at the masked positions, with autograd on."""
    logits = backend.forward_with_grad(batch)
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.to(logits.device).reshape(-1), ignore_index=-100
    )


def adamw(parameters, steps: int, lr: float = LR) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The notebooks' optimizer over ``parameters`` (at their learning rate unless ``lr``), and its warm-up schedule."""
    optimizer = torch.optim.AdamW(list(parameters), lr=lr, weight_decay=WEIGHT_DECAY)
    warmup = max(1, int(WARMUP_FRACTION * steps))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))


def optimizer_step(loss_of, optimizer) -> torch.Tensor:
    """Forward (``loss_of()``), backward and one AdamW step; the loss (a tensor: reading it is the
    caller's sync)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.backward()
    optimizer.step()
    return loss.detach()


class CellClassifier(torch.nn.Module):
    """BertForSequenceClassification's head: the pooler (dense + tanh on the first token) and a
    linear classifier, initialised from ``seed`` as BERT initialises (normal, std 0.02; zero bias)."""

    def __init__(self, hidden: int, classes: int, seed: int):
        super().__init__()
        self.pooler, self.classifier = torch.nn.Linear(hidden, hidden), torch.nn.Linear(hidden, classes)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.pooler, self.classifier):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.02)
                layer.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0].float())))


def cell_labels(batch: Batch, seed: int) -> torch.Tensor:
    """The classification objective's seeded label of each cell."""
    return torch.randint(CLASSES, (batch.n_cells,), generator=torch.Generator().manual_seed(seed))


class Trainee:
    """A backend with what one objective trains on top of it: its loss for a batch, and every
    parameter the optimizer steps (the model's in its own layout; the head's under ``HEAD_PREFIX``)."""

    def __init__(self, backend: Backend, objective: str, variant: Variant, seed: int = 0, classes: int | None = None):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")
        if objective not in backend.spec.trains:
            raise ValueError(f"{backend.name} cannot train {objective} (it trains: {', '.join(backend.spec.trains)})")
        self.backend, self.objective, self.variant, self.seed = backend, objective, variant, seed
        self.head = (
            CellClassifier(variant.hidden_size, classes or CLASSES, seed).to(backend.device)
            if objective == "classify"
            else None
        )

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        head = {} if self.head is None else {HEAD_PREFIX + n: p for n, p in self.head.named_parameters()}
        return {**dict(self.backend.model.named_parameters()), **head}

    def trains(self, name: str) -> bool:
        """Whether the objective reaches this parameter at all (a classifier never reaches the MLM
        head: no gradient arrives there, and AdamW leaves a parameter without one untouched)."""
        return self.head is None or not name.startswith(MLM_HEAD_PREFIX)

    def loss(self, batch: Batch, step: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The objective's loss with autograd on; ``step`` seeds the MLM mask (a fresh one per step);
        ``labels``: the classifier's cell labels (default: the seeded ones)."""
        if self.head is None:
            masked, labels = masked_batch(batch, self.variant, self.seed + step)
            return mlm_loss(self.backend, masked, labels)
        logits = self.head(self.backend.final_hidden(batch))
        labels = cell_labels(batch, self.seed) if labels is None else labels
        return torch.nn.functional.cross_entropy(logits, labels.to(logits.device))


class TrainStep:
    """One MLM training step per call, for the throughput sweep: each batch is masked once (on its
    first call, a warm-up pass) and keeps its mask, so timed steps do no host work beyond the
    launches and never sync."""

    def __init__(self, backend: Backend, variant: Variant, seed: int = 0):
        self.backend, self.variant, self.seed = backend, variant, seed
        self.optimizer, _ = adamw(backend.model.parameters(), 1)
        # id(input ids) -> (those ids, kept alive so the id is not reused; masked batch; labels)
        self._masked: dict[int, tuple] = {}

    def __call__(self, batch) -> torch.Tensor:
        key = id(batch.input_ids)
        if key not in self._masked:
            self._masked[key] = (batch.input_ids, *masked_batch(batch, self.variant, self.seed + len(self._masked)))
        _, masked, labels = self._masked[key]
        return optimizer_step(lambda: mlm_loss(self.backend, masked, labels), self.optimizer)
