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


DECODER_ROW_MULTIPLE = 64


class Predictions(nn.Module):
    """MLM head; the decoder is the word-embedding matrix (tied), so it holds only its bias.

    Geneformer's vocabularies (25,426 and 20,275 tokens) are not multiples of 8, so the [tokens ×
    vocab] logits have a row pitch that is not 16-byte aligned and cuBLAS falls back to an
    align-1 kernel: on the H100 that one GEMM ran at ~80 TFLOP/s and took a quarter of V2-316M's
    forward (19 of 81 ms at batch 8, full context). The decoder is therefore run with its rows
    zero-padded to a multiple of 64 and the extra logits sliced off: the same numbers, one
    aligned GEMM. The padding is made on each call, so the tie to the embeddings holds under
    fine-tuning. (The HF reference keeps HF's own head: it is measured as shipped.)
    """

    def __init__(self, cfg: dict, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = HeadTransform(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg["vocab_size"]))
        self._decoder = [word_embeddings]  # a list keeps it out of this module's state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._decoder[0].weight
        vocab, pad = weight.shape[0], -weight.shape[0] % DECODER_ROW_MULTIPLE
        logits = F.linear(self.transform(x), F.pad(weight, (0, 0, 0, pad)), F.pad(self.bias, (0, pad)))
        return logits[..., :vocab]


class MLMHead(nn.Module):
    def __init__(self, cfg: dict, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = Predictions(cfg, word_embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictions(x)


class EncoderWithMLMHead(nn.Module):
    """The two ends every model over the TE layout shares: logits are the MLM head over
    ``encode`` (padded cells) or ``encode_packed`` (cells end to end, THD), which subclasses define
    together with ``bert`` and ``cls``; workloads that read hidden states call ``encode*`` alone."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """MLM logits ``[B, S, vocab]``; ``attention_mask`` is 1 for real tokens, 0 for padding.
        FP8, when wanted, is entered by the caller around this call; the head stays out of it."""
        return self.cls(self.encode(input_ids, attention_mask))

    def forward_packed(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int
    ) -> torch.Tensor:
        """MLM logits ``[T, vocab]`` of cells packed end to end."""
        return self.cls(self.encode_packed(input_ids, position_ids, cu_seqlens, max_seqlen))
