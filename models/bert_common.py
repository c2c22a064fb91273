"""Plain-PyTorch pieces that HF, NVIDIA's TE Geneformer and our models share unchanged.

NVIDIA's TE Geneformer keeps the embeddings and the MLM head as HF has them (plain PyTorch,
HF names); only the encoder layers are TransformerEngine modules. Both our TE model and the
TE-format reference build those two ends from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r} (supported: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


class Embeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        H = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], H)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], H)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], H)
        self.LayerNorm = nn.LayerNorm(H, eps=cfg["layer_norm_eps"])

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``positions`` default to 0..S-1 along the last axis; packed cells pass their own."""
        # Geneformer never uses segment ids: every token has type 0.
        if positions is None:
            positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        x = x + self.position_embeddings(positions)
        return self.LayerNorm(x)


class Encoder(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class Bert(nn.Module):
    """Embeddings + a stack of encoder layers, under HF's names (``bert.embeddings``,
    ``bert.encoder.layer.N``); the layers are whatever implementation the caller builds."""

    def __init__(self, cfg: dict, layers: list[nn.Module]):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(layers)


class HeadTransform(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.act = activation(cfg["hidden_act"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class Predictions(nn.Module):
    """MLM head; the decoder is the word-embedding matrix (tied), so it holds only its bias."""

    def __init__(self, cfg: dict, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = HeadTransform(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg["vocab_size"]))
        self._decoder = [word_embeddings]  # a list keeps it out of this module's state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), self._decoder[0].weight, self.bias)


class MLMHead(nn.Module):
    def __init__(self, cfg: dict, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = Predictions(cfg, word_embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictions(x)
