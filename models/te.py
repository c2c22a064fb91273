"""Geneformer on NVIDIA TransformerEngine (``transformer_engine.pytorch``), in NVIDIA's TE layout.

Embeddings and the MLM head are the plain-PyTorch HF ones (``models.bert_common``), as in NVIDIA's
TE Geneformer; the encoder layers are TE modules. Two builds of the layer are offered, both
loading and saving the same checkpoint layout:

``modular`` (the default) — ``te.MultiheadAttention`` + ``te.LayerNorm`` + two ``te.Linear``: the
  structure of NVIDIA's own ``TEBertLayer``, whose parameter names *are* the checkpoint layout.
``fused`` — one ``te.TransformerLayer`` per layer, configured as BERT's post-LN block
  (``output_layernorm=True``, ``apply_residual_connection_post_layernorm=True``, ReLU). TE fuses the
  post-attention LayerNorm into fc1 (``LayerNormMLP``) and bias + dropout + residual add.

Which is faster was measured, not assumed (``gfqual bench --sweep te-impl-fp8``; the numbers live in
results/h100/perf-te-impl-fp8-h100.json and the README's static table, checked against it by a
test): at bf16 the two are equal; under FP8 the fused layer wins at large batches because
``LayerNormMLP`` writes its LayerNorm and ReLU outputs straight to FP8 instead of casting them in
separate passes, and loses at small ones to its bias-dropout-add, a ``torch.compile``d function
that recompiles per input shape and falls back to eager once dynamo's recompile limit is reached
in mixed-shape runs. So the default is the simpler build with native names, and ``te-fused`` is
the one to pick for the last FP8 percent at large batches; both are parity-checked in every GPU run.

In the fused layer TE names the post-attention LayerNorm ``layernorm_mlp.layer_norm_*`` and the
closing one ``layernorm``; the checkpoint layout names them the other way round (``layernorm`` is
post-attention, ``layernorm_mlp.layer_norm`` closes the layer). ``FUSED_NAMES`` is that mapping,
applied on load and save, so the swap lives in one place.

Either build takes its tokens padded (``bshd``: [B, S, H] and a padding mask) or, built with
``qkv_format="thd"``, packed end to end ([T, H] and the cells' cumulative lengths,
``harness.data.batching.PackedBatch``): the same weights, no work spent on padding.

Importing this module needs TransformerEngine, and TE needs a CUDA GPU; callers ask
``harness.capability`` first.
"""

from __future__ import annotations

import torch
import transformer_engine.pytorch as te
from torch import nn

from models.bert_common import Bert, EncoderWithMLMHead, MLMHead
from models.checkpoint import CheckpointError, load_parameters
from models.convert import layout_keys

IMPLEMENTATIONS = ("modular", "fused")
QKV_FORMATS = ("bshd", "thd")

# checkpoint-layout leaf (under bert.encoder.layer.N.) -> te.TransformerLayer parameter name
FUSED_NAMES = {
    "self_attention.qkv.weight": "self_attention.qkv.weight",
    "self_attention.qkv.bias": "self_attention.qkv.bias",
    "self_attention.proj.weight": "self_attention.proj.weight",
    "self_attention.proj.bias": "self_attention.proj.bias",
    "layernorm.weight": "layernorm_mlp.layer_norm_weight",
    "layernorm.bias": "layernorm_mlp.layer_norm_bias",
    "layernorm_mlp.fc1.weight": "layernorm_mlp.fc1_weight",
    "layernorm_mlp.fc1.bias": "layernorm_mlp.fc1_bias",
    "layernorm_mlp.fc2.weight": "layernorm_mlp.fc2_weight",
    "layernorm_mlp.fc2.bias": "layernorm_mlp.fc2_bias",
    "layernorm_mlp.layer_norm.weight": "layernorm.weight",
    "layernorm_mlp.layer_norm.bias": "layernorm.bias",
}


def _check_activation(cfg: dict) -> None:
    if cfg["hidden_act"] != "relu":
        raise CheckpointError(f"Geneformer's TE layers implement ReLU; config has {cfg['hidden_act']!r}")


class FusedLayer(nn.Module):
    """BERT post-LN layer as one ``te.TransformerLayer``."""

    def __init__(self, cfg: dict, layer_number: int, params_dtype: torch.dtype, qkv_format: str):
        super().__init__()
        _check_activation(cfg)
        self.block = te.TransformerLayer(
            hidden_size=cfg["hidden_size"],
            ffn_hidden_size=cfg["intermediate_size"],
            num_attention_heads=cfg["num_attention_heads"],
            layernorm_epsilon=cfg["layer_norm_eps"],
            hidden_dropout=0.0,
            attention_dropout=0.0,
            self_attn_mask_type="padding",
            output_layernorm=True,
            apply_residual_connection_post_layernorm=True,
            activation="relu",
            attn_input_format=qkv_format,
            fuse_qkv_params=True,
            qkv_weight_interleaved=True,
            layer_number=layer_number,
            params_dtype=params_dtype,
        )

    def forward(self, x: torch.Tensor, cells: dict) -> torch.Tensor:
        cells = dict(cells)
        return self.block(x, self_attn_mask_type=cells.pop("attn_mask_type"), **cells)


class ModularLayer(nn.Module):
    """BERT post-LN layer from separate TE modules, named as the checkpoint layout."""

    def __init__(self, cfg: dict, layer_number: int, params_dtype: torch.dtype, qkv_format: str):
        super().__init__()
        _check_activation(cfg)
        H, I, eps = cfg["hidden_size"], cfg["intermediate_size"], cfg["layer_norm_eps"]
        self.self_attention = te.MultiheadAttention(
            hidden_size=H,
            num_attention_heads=cfg["num_attention_heads"],
            attention_dropout=0.0,
            layer_number=layer_number,
            attn_mask_type="padding",
            input_layernorm=False,
            attention_type="self",
            fuse_qkv_params=True,
            qkv_weight_interleaved=True,
            qkv_format=qkv_format,
            params_dtype=params_dtype,
        )
        self.layernorm = te.LayerNorm(H, eps=eps, params_dtype=params_dtype)
        self.layernorm_mlp = nn.Module()
        self.layernorm_mlp.fc1 = te.Linear(H, I, params_dtype=params_dtype)
        self.layernorm_mlp.fc2 = te.Linear(I, H, params_dtype=params_dtype)
        self.layernorm_mlp.layer_norm = te.LayerNorm(H, eps=eps, params_dtype=params_dtype)

    def forward(self, x: torch.Tensor, cells: dict) -> torch.Tensor:
        attn = self.self_attention(x, **cells)
        x = self.layernorm(x + attn)
        mlp = self.layernorm_mlp
        return mlp.layer_norm(x + mlp.fc2(torch.relu(mlp.fc1(x))))


def padded_cells(attention_mask: torch.Tensor | None) -> dict:
    """Attention arguments that tell padded cells apart: TE wants the padding mask as
    [B, 1, 1, S] booleans, True where a key is padding."""
    if attention_mask is None:
        return {"attn_mask_type": "no_mask"}
    return {"attn_mask_type": "padding", "attention_mask": (attention_mask == 0)[:, None, None, :]}


def packed_cells(cu_seqlens: torch.Tensor, max_seqlen: int) -> dict:
    """Attention arguments that tell packed (THD) cells apart: their cumulative lengths."""
    return {
        "attn_mask_type": "padding",
        "cu_seqlens_q": cu_seqlens,
        "cu_seqlens_kv": cu_seqlens,
        "max_seqlen_q": max_seqlen,
        "max_seqlen_kv": max_seqlen,
    }


class TEGeneformerForMaskedLM(EncoderWithMLMHead):
    """Geneformer BertForMaskedLM with TransformerEngine encoder layers."""

    def __init__(
        self, cfg: dict, impl: str = "modular", params_dtype: torch.dtype = torch.float32, qkv_format: str = "bshd"
    ):
        super().__init__()
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"TE layer implementation must be one of {IMPLEMENTATIONS}, not {impl!r}")
        if qkv_format not in QKV_FORMATS:
            raise ValueError(f"TE token layout must be one of {QKV_FORMATS}, not {qkv_format!r}")
        layer_cls = FusedLayer if impl == "fused" else ModularLayer
        self.impl, self.qkv_format = impl, qkv_format
        self.config = dict(cfg)
        layers = [layer_cls(cfg, i + 1, params_dtype, qkv_format) for i in range(cfg["num_hidden_layers"])]
        self.bert = Bert(cfg, layers)
        self.cls = MLMHead(cfg, self.bert.embeddings.word_embeddings)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, n_layers: int | None = None
    ) -> torch.Tensor:
        """Hidden states ``[B, S, H]`` after the first ``n_layers`` layers (all by default): no
        later layer and no MLM head runs, which is all an embedding needs."""
        return self._encode(self.bert.embeddings(input_ids), padded_cells(attention_mask), n_layers)

    def encode_packed(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: int,
        n_layers: int | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[T, H]`` of packed cells after the first ``n_layers`` layers."""
        x = self.bert.embeddings(input_ids, position_ids)
        return self._encode(x, packed_cells(cu_seqlens, max_seqlen), n_layers)

    def _encode(self, x: torch.Tensor, cells: dict, n_layers: int | None) -> torch.Tensor:
        for layer in self.bert.encoder.layer[:n_layers]:
            x = layer(x, cells)
        return x

    # --- checkpoint layout <-> module names -------------------------------------------------
    def _internal_name(self, key: str) -> str:
        if self.impl == "modular" or not key.startswith("bert.encoder.layer."):
            return key
        parts = key.split(".")
        prefix, leaf = ".".join(parts[:4]), ".".join(parts[4:])
        return f"{prefix}.block.{FUSED_NAMES[leaf]}"

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load checkpoint-layout tensors (``Checkpoint.parameters()``)."""
        load_parameters(self, {self._internal_name(k): v for k, v in tensors.items()})

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """The parameters under checkpoint-layout names (no ``_extra_state``, no tied copies)."""
        own = dict(self.named_parameters())
        return {k: own[self._internal_name(k)] for k in layout_keys("te", self.config["num_hidden_layers"])}
