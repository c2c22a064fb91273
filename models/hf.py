"""The Hugging Face reference: ``transformers.BertForMaskedLM``, exactly as Geneformer ships it.

Loaded from a local Geneformer directory, or built with seeded random weights of a variant's
published config. Loading is strict: a missing, unexpected or misshapen tensor is an error, never
a silently re-initialised weight (which ``from_pretrained`` would only warn about).
"""

from __future__ import annotations

import contextlib

import torch
from transformers import BertConfig, BertForMaskedLM

from models.checkpoint import Checkpoint, CheckpointError, load_parameters, read_checkpoint
from models.random_weights import draw
from models.registry import Variant

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")  # eager is what the original Geneformer code ran


def bert_config(config: dict, attn_implementation: str = "eager") -> BertConfig:
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {ATTN_IMPLEMENTATIONS}, not {attn_implementation!r}")
    fields = {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype", "architectures")}
    return BertConfig(**fields, attn_implementation=attn_implementation)


def random_init_(model: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Seeded random weights in which every tensor carries information.

    HF's own init sets biases to 0 and LayerNorm weights to 1; a checkpoint like that cannot reveal
    a permuted bias or a LayerNorm mapped to the wrong place. Here matrices and biases are
    N(0, std), LayerNorm weights 1 + N(0, 0.1) and LayerNorm biases N(0, std): the scale of trained
    BERT weights, with no symmetric tensor left. Deterministic for a given seed on any machine
    (drawn on the CPU in parameter order).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(draw(name, tuple(param.shape), gen, std).to(param.dtype))
    return model


def _skip_hf_init():
    """transformers' own weight init, skipped: ``random_init_`` overwrites every parameter anyway
    (a second of V2-104M's start-up)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def random_hf_model(variant: Variant, seed: int, attn_implementation: str = "eager") -> BertForMaskedLM:
    """The variant's exact published architecture with seeded random weights (fp32, eval mode)."""
    with _skip_hf_init():
        model = BertForMaskedLM(bert_config(variant.bert_config(), attn_implementation))
    random_init_(model, seed)
    model.tie_weights()
    return model.eval()


def hf_model_from_tensors(config: dict, tensors: dict, attn_implementation: str = "eager") -> BertForMaskedLM:
    """BertForMaskedLM from exactly the HF-layout parameters (``Checkpoint.parameters()``)."""
    model = BertForMaskedLM(bert_config(config, attn_implementation))
    load_parameters(model, tensors)
    model.tie_weights()
    return model.eval()


def hf_model_from_checkpoint(ckpt: Checkpoint, attn_implementation: str = "eager") -> BertForMaskedLM:
    """Build BertForMaskedLM from a loaded HF-layout checkpoint, strictly."""
    if ckpt.layout != "hf":
        raise CheckpointError(f"{ckpt.path} is a TE checkpoint; the HF reference needs an HF one")
    return hf_model_from_tensors(ckpt.config, ckpt.parameters(), attn_implementation)


def load_hf_model(path, attn_implementation: str = "eager") -> tuple[BertForMaskedLM, Checkpoint]:
    ckpt = read_checkpoint(path, expect="hf")
    return hf_model_from_checkpoint(ckpt, attn_implementation), ckpt
