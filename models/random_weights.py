"""Seeded random weights of a variant's published config, drawn without building a model.

``random_checkpoint`` gives the same tensors as ``models.hf.random_hf_model`` (the same rule,
drawn on the CPU in the same order: BertForMaskedLM's parameter order), as an in-memory HF-layout
``Checkpoint``, so a TE backend can be built from random weights without importing transformers
(seconds of ``gfqual embed``'s start-up). Drawn on the CPU, not the GPU, so that a seed means the
same weights on every machine.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models import convert
from models.checkpoint import Checkpoint
from models.registry import Variant

STD = 0.02
_EMBEDDINGS = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")
_LAYER = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)
_HEAD = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm")


def draw(name: str, shape: tuple[int, ...], gen: torch.Generator, std: float = STD) -> torch.Tensor:
    """One parameter: N(0, std); a LayerNorm weight 1 + N(0, 0.1) (see ``models.hf.random_init_``)."""
    noise = torch.randn(shape, generator=gen, dtype=torch.float32) * std
    if "LayerNorm.weight" in name or name.endswith(("layernorm.weight", "layer_norm.weight")):
        noise = 1.0 + noise * (0.1 / std)
    return noise


def hf_parameter_order(num_layers: int) -> list[str]:
    """BertForMaskedLM's parameters in ``named_parameters`` order (tied copies excluded)."""
    pair = lambda prefix: [f"{prefix}.weight", f"{prefix}.bias"]  # noqa: E731
    names = [f"bert.embeddings.{n}" for n in _EMBEDDINGS] + pair("bert.embeddings.LayerNorm")
    for i in range(num_layers):
        names += [n for part in _LAYER for n in pair(f"bert.encoder.layer.{i}.{part}")]
    return names + ["cls.predictions.bias"] + [n for part in _HEAD for n in pair(part)]


def random_parameters(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """HF-layout parameters of ``config``, seeded: ``random_hf_model``'s, bit for bit."""
    shapes = convert.hf_parameter_shapes(config)
    gen = torch.Generator().manual_seed(seed)
    return {name: draw(name, shapes[name], gen) for name in hf_parameter_order(config["num_hidden_layers"])}


def random_weights_block(seed: int) -> dict:
    """What a results file says of weights made by ``random_hf_model`` or ``random_checkpoint``."""
    return {
        "source": "random-init",
        "seed": seed,
        "note": "seeded random weights of the published configs (models.hf.random_init_); "
        "not Geneformer's trained weights",
    }


def random_checkpoint(variant: Variant, seed: int) -> Checkpoint:
    """The variant's published config with seeded random weights, as an HF-layout checkpoint."""
    config = variant.bert_config()
    path = Path(f"<random weights, seed {seed}>")
    return Checkpoint(path, config, random_parameters(config, seed), path, "hf")
