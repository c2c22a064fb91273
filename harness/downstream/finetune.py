"""Fine-tuning mode, as the Geneformer paper evaluated its tasks: the pretrained encoder plus a
linear head, trained per fold on the training items, with the lower layers frozen.

Genes (dosage sensitivity): token classification. Every occurrence of a training gene in any
cell is a labelled token; a test gene's probability is its softmax averaged over all its
occurrences. Cells (cardiomyopathy): the head reads the mean of the final hidden state over the
cell's genes (Geneformer's cell embedding).

Each fold starts from a fresh copy of the weights (``make_backend``), so folds do not leak into
one another, and HF and TE start every fold from the same tensors and see batches in the same
order (the shuffle is seeded per epoch). The model stays in eval mode (dropout off) so the only
difference between backends is their arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.backends import Backend
from harness.data.batching import collate
from harness.embeddings import length_batches, mean_over_genes
from models.errors import UsageError
from models.registry import Variant


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 1
    lr: float = 5e-5  # encoder (Geneformer's examples use 5e-5 for the dosage task)
    head_lr: float = 1e-3
    freeze_layers: int = 2  # lowest encoder layers kept frozen (with the embeddings)
    max_tokens: int = 8192  # per training batch
    seed: int = 0


def _trainable(backend: Backend, n_classes: int, cfg: FineTuneConfig) -> tuple[nn.Linear, torch.optim.Optimizer]:
    model = backend.model
    layers = list(model.bert.encoder.layer)
    if not 0 <= cfg.freeze_layers <= len(layers):
        raise UsageError(f"--freeze-layers must be between 0 and {len(layers)}, not {cfg.freeze_layers}")
    model.requires_grad_(False)
    for layer in layers[cfg.freeze_layers :]:
        layer.requires_grad_(True)
    torch.manual_seed(cfg.seed)
    head = nn.Linear(model.bert.embeddings.word_embeddings.weight.shape[1], n_classes).to(backend.device)
    encoder_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": cfg.lr}, {"params": head.parameters(), "lr": cfg.head_lr}]
    )
    return head, optimizer


def _epoch_batches(
    cells: list[list[int]], items: np.ndarray, max_tokens: int, epoch: int, seed: int
) -> list[list[int]]:
    groups = [[int(items[i]) for i in g] for g in length_batches([cells[i] for i in items], max_tokens)]
    order = np.random.default_rng(seed + epoch).permutation(len(groups))
    return [groups[i] for i in order]


def _train(backend: Backend, head: nn.Linear, optimizer, batches, variant: Variant, loss_of: Callable) -> float:
    losses = []
    for group in batches:
        batch = collate(group["cells"], variant).to(backend.device)
        hidden = backend.final_hidden(batch).float()
        loss = loss_of(hidden, batch, group)
        if loss is None:
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def finetune_genes(
    make_backend: Callable[[], Backend],
    cells: list[list[int]],
    variant: Variant,
    token_label: dict[int, int],
    train_tokens: set[int],
    test_tokens: list[int],
    cfg: FineTuneConfig,
) -> tuple[np.ndarray, float]:
    """Probabilities [len(test_tokens), 2] for the test genes, and the last epoch's training loss."""
    backend = make_backend()
    head, optimizer = _trainable(backend, 2, cfg)
    lookup = torch.full((variant.vocab_size,), -100, dtype=torch.long)
    for token in train_tokens:
        lookup[token] = token_label[token]
    lookup = lookup.to(backend.device)
    test_set = set(test_tokens)
    relevant = np.array([i for i, c in enumerate(cells) if any(t in train_tokens or t in test_set for t in c)])
    loss = float("nan")

    def token_loss(hidden, batch, _group):
        target = lookup[batch.input_ids]
        if not (target >= 0).any():
            return None
        return nn.functional.cross_entropy(head(hidden[target >= 0]), target[target >= 0])

    for epoch in range(cfg.epochs):
        batches = [
            {"cells": [cells[i] for i in g]} for g in _epoch_batches(cells, relevant, cfg.max_tokens, epoch, cfg.seed)
        ]
        loss = _train(backend, head, optimizer, batches, variant, token_loss)
    sums = torch.zeros(variant.vocab_size, 2, dtype=torch.float64)
    counts = torch.zeros(variant.vocab_size, dtype=torch.float64)
    with torch.no_grad():
        for group in length_batches([cells[i] for i in relevant], cfg.max_tokens):
            batch = collate([cells[relevant[i]] for i in group], variant).to(backend.device)
            proba = head(backend.final_hidden(batch).float()).softmax(-1)
            ids = batch.input_ids[batch.gene_mask].cpu()
            sums.index_add_(0, ids, proba[batch.gene_mask].double().cpu())
            counts.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64))
    test = torch.as_tensor(test_tokens)
    if (counts[test] == 0).any():
        raise ValueError("a test gene occurs in no cell")
    return (sums[test] / counts[test, None]).numpy(), loss


def finetune_cells(
    make_backend: Callable[[], Backend],
    cells: list[list[int]],
    variant: Variant,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    n_classes: int,
    cfg: FineTuneConfig,
) -> tuple[np.ndarray, float]:
    """Probabilities [len(test), n_classes] for the test cells, and the last epoch's training loss."""
    backend = make_backend()
    head, optimizer = _trainable(backend, n_classes, cfg)
    targets = torch.as_tensor(y)
    loss = float("nan")

    def cell_loss(hidden, batch, group):
        pooled = mean_over_genes(hidden, batch.gene_mask)
        return nn.functional.cross_entropy(head(pooled), targets[group["items"]].to(hidden.device))

    for epoch in range(cfg.epochs):
        batches = [
            {"cells": [cells[i] for i in g], "items": g}
            for g in _epoch_batches(cells, train, cfg.max_tokens, epoch, cfg.seed)
        ]
        loss = _train(backend, head, optimizer, batches, variant, cell_loss)
    proba = np.zeros((len(test), n_classes))
    with torch.no_grad():
        for group in length_batches([cells[i] for i in test], cfg.max_tokens):
            batch = collate([cells[test[i]] for i in group], variant).to(backend.device)
            pooled = mean_over_genes(backend.final_hidden(batch).float(), batch.gene_mask)
            proba[group] = head(pooled).softmax(-1).cpu().numpy()
    return proba, loss
