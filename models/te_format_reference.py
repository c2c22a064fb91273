"""Plain PyTorch over the TE checkpoint layout: NOT TransformerEngine.

``TEFormatTorchForMaskedLM`` holds exactly the tensors of an NVIDIA TE Geneformer checkpoint, under
the same names (fused per-head ``qkv``, ``proj``, ``layernorm``, ``layernorm_mlp.*``), and computes
the Geneformer forward from them with ordinary PyTorch operations. It exists for two jobs:

* CPU CI can prove the TE checkpoint format and the HF ⇄ TE conversion correct with no GPU;
* GPU parity runs can tell a conversion error (this model disagrees with HF too) from a TE kernel
  effect (only the real TE model disagrees).

Reads top to bottom like BERT (Devlin et al.; HF ``modeling_bert``): embeddings, then per layer
self-attention → add & LayerNorm → ReLU MLP → add & LayerNorm, then the MLM head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.bert_common import Bert, EncoderWithMLMHead, MLMHead, activation


class SelfAttention(nn.Module):
    """Multi-head self-attention with the fused, per-head interleaved QKV projection of TE."""

    def __init__(self, cfg: dict):
        super().__init__()
        H = cfg["hidden_size"]
        self.num_heads = cfg["num_attention_heads"]
        self.qkv = nn.Linear(H, 3 * H)
        self.proj = nn.Linear(H, H)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor | None) -> torch.Tensor:
        """``blocked`` is True where a query may not see a key (padding, or another packed cell),
        broadcastable to [B, heads, S, S]."""
        B, S, H = x.shape
        # qkv rows are [heads, 3, head_dim]: split per head into query, key and value.
        q, k, v = self.qkv(x).view(B, S, self.num_heads, 3, -1).unbind(dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, S, head_dim]
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if blocked is not None:
            scores = scores.masked_fill(blocked, float("-inf"))
        context = scores.softmax(dim=-1) @ v
        return self.proj(context.transpose(1, 2).reshape(B, S, H))


class MLP(nn.Module):
    """fc1 → activation → fc2, then the layer's closing LayerNorm (named as in TE checkpoints)."""

    def __init__(self, cfg: dict):
        super().__init__()
        H, I = cfg["hidden_size"], cfg["intermediate_size"]
        self.fc1 = nn.Linear(H, I)
        self.fc2 = nn.Linear(I, H)
        self.layer_norm = nn.LayerNorm(H, eps=cfg["layer_norm_eps"])
        self.act = activation(cfg["hidden_act"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Layer(nn.Module):
    """Post-LN BERT layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.self_attention = SelfAttention(cfg)
        self.layernorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.layernorm_mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor | None) -> torch.Tensor:
        x = self.layernorm(x + self.self_attention(x, blocked))
        return self.layernorm_mlp.layer_norm(x + self.layernorm_mlp(x))


class TEFormatTorchForMaskedLM(EncoderWithMLMHead):
    """Geneformer over TE-layout weights in plain PyTorch (see the module docstring)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = dict(cfg)
        self.bert = Bert(cfg, [Layer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.cls = MLMHead(cfg, self.bert.embeddings.word_embeddings)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, n_layers: int | None = None
    ) -> torch.Tensor:
        """Hidden states ``[B, S, H]`` after the first ``n_layers`` layers (all by default)."""
        blocked = None if attention_mask is None else (attention_mask == 0)[:, None, None, :]
        return self._encode(self.bert.embeddings(input_ids), blocked, n_layers)

    def encode_packed(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: int,
        n_layers: int | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[T, H]`` of packed cells: one sequence whose tokens see only their own
        cell (a block-diagonal mask from the cumulative lengths; ``max_seqlen`` is TE's and unused)."""
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        cell = torch.repeat_interleave(torch.arange(len(lengths), device=input_ids.device), lengths)
        blocked = (cell[:, None] != cell[None, :])[None, None]
        x = self.bert.embeddings(input_ids[None], position_ids[None])
        return self._encode(x, blocked, n_layers)[0]

    def _encode(self, x: torch.Tensor, blocked: torch.Tensor | None, n_layers: int | None) -> torch.Tensor:
        for layer in self.bert.encoder.layer[:n_layers]:
            x = layer(x, blocked)
        return x
