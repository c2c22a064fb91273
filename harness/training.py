"""Training Geneformer as its notebooks do: the MLM objective, AdamW with linear warm-up, and one
optimizer step as the unit both training parity and the training throughput sweep run.

The objective is Geneformer's pretraining one: a seeded 15% of gene tokens replaced by ``<mask>``
and the cross-entropy of the original tokens there. Models train in eval mode (dropout off), so
HF and TE train the same deterministic function. The backends train in mixed precision as users
run it (``Backend`` built with ``training=True``; ``Precision.mixed``): fp32 master weights, the
products at bf16 under ``torch.autocast`` (and TE's FP8 autocast for FP8 recipes).
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch

from harness.backends import Backend
from harness.data.batching import Batch, PackedBatch
from models.registry import Variant

MASK_FRACTION = 0.15  # Geneformer's pretraining masks 15% of gene tokens
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


def adamw(backend: Backend, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The notebooks' optimizer over the parameters the model trains, and its warm-up schedule."""
    optimizer = torch.optim.AdamW(backend.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    warmup = max(1, int(WARMUP_FRACTION * steps))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))


def optimizer_step(backend: Backend, optimizer, batch, labels: torch.Tensor) -> torch.Tensor:
    """Forward, backward and one AdamW step; the loss (a tensor: reading it is the caller's sync)."""
    optimizer.zero_grad(set_to_none=True)
    loss = mlm_loss(backend, batch, labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


class TrainStep:
    """One training step per call, for the throughput sweep: each batch is masked once (on its
    first call, a warm-up pass) and keeps its mask, so timed steps do no host work beyond the
    launches and never sync."""

    def __init__(self, backend: Backend, variant: Variant, seed: int = 0):
        self.backend, self.variant, self.seed = backend, variant, seed
        self.optimizer, _ = adamw(backend, 1)
        # id(input ids) -> (those ids, kept alive so the id is not reused; masked batch; labels)
        self._masked: dict[int, tuple] = {}

    def __call__(self, batch) -> torch.Tensor:
        key = id(batch.input_ids)
        if key not in self._masked:
            self._masked[key] = (batch.input_ids, *masked_batch(batch, self.variant, self.seed + len(self._masked)))
        _, masked, labels = self._masked[key]
        return optimizer_step(self.backend, self.optimizer, masked, labels)
