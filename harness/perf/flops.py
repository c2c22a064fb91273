"""Floating-point work of one Geneformer forward pass, counted from the shapes (2 per MAC).

Per layer: the QKV, output, fc1 and fc2 GEMMs on every token (padded tokens are computed too),
and attention's QK^T and PV products over the padded sequence; then the MLM head's transform
and decoder. LayerNorm, softmax and element-wise work are left out (well under 1%).
"""

from __future__ import annotations

from models.registry import Variant


def forward_flops(variant: Variant, batch: int, seq_len: int) -> float:
    H, I, V, L = variant.hidden_size, variant.intermediate_size, variant.vocab_size, variant.num_hidden_layers
    tokens = batch * seq_len
    gemms = 2 * tokens * (4 * H * H + 2 * H * I)
    attention = 2 * 2 * batch * seq_len * seq_len * H
    head = 2 * tokens * (H * H + H * V)
    return L * (gemms + attention) + head
