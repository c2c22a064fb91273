"""Floating-point work of one Geneformer forward pass, counted from the shapes (2 per MAC).

Per layer: the QKV, output, fc1 and fc2 GEMMs on every token the batch holds (padding is
computed too, so it counts), and attention's QK^T and PV products over every (query, key) pair
inside one sequence: S² per padded cell, Σ len² for packed cells. Then, for a full forward (not
the encoder alone), the MLM head's transform and decoder on every token. LayerNorm, softmax and
element-wise work are left out (under 1%).
"""

from __future__ import annotations

from harness.data.batching import Batch, PackedBatch
from models.registry import Variant

# A training step's work over its forward's: the backward computes each product twice (the input's
# gradient and the weight's), the usual 3x (Kaplan et al. 2020); the optimizer's element-wise work is left out.
TRAINING_WORK = 3


def forward_flops(variant: Variant, tokens: int, attended_pairs: int, head: bool = True) -> float:
    """Work of a forward over ``tokens`` tokens whose sequences hold ``attended_pairs`` (q, k) pairs,
    with the MLM head or (``head=False``) the encoder alone."""
    H, I, V, L = variant.hidden_size, variant.intermediate_size, variant.vocab_size, variant.num_hidden_layers
    gemms = 2 * tokens * (4 * H * H + 2 * H * I)
    attention = 2 * 2 * attended_pairs * H
    mlm = 2 * tokens * (H * H + H * V) if head else 0
    return L * (gemms + attention) + mlm


def useful_flops(variant: Variant, batch: Batch | PackedBatch, head: bool = True) -> float:
    """Work on the real cells alone (no padding, no filler): what any layout must do for them.
    Throughput judged against the ceiling uses this, so skipping padding is never counted as work."""
    lengths = batch.lengths.long()
    return forward_flops(variant, int(lengths.sum()), int((lengths**2).sum()), head)


def batch_flops(variant: Variant, batch: Batch | PackedBatch, head: bool = True) -> float:
    """Work the batch's shape asks for, padding and filler included."""
    if isinstance(batch, PackedBatch):
        segments = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).long()
        return forward_flops(variant, batch.input_ids.numel(), int((segments**2).sum()), head)
    B, S = batch.input_ids.shape
    return forward_flops(variant, B * S, B * S * S, head)
