"""HF ⇄ TE Geneformer checkpoint conversion: one explicit, reversible table of names and transforms.

The TE layout is the one of NVIDIA's published TE Geneformer checkpoints (bionemo-framework
``geneformer/convert.py``): per layer ``self_attention.qkv`` (Q, K and V packed per head, rows laid
out as ``[heads, 3, head_dim]``), ``self_attention.proj``, ``layernorm`` (after attention),
``layernorm_mlp.fc1``, ``layernorm_mlp.fc2`` and ``layernorm_mlp.layer_norm`` (after the MLP).
Embeddings and the MLM head keep their HF names in both layouts.

Every rule is applied in both directions, so HF → TE → HF is the identity bit for bit: packing
and unpacking only move elements. Conversion is strict: every source tensor is consumed exactly
once and every target tensor produced exactly once, or a ``ConversionError`` names the keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from models.errors import GfqualError

Tensors = list[torch.Tensor]
Transform = Callable[[Tensors, int], Tensors]


class ConversionError(GfqualError, ValueError):
    """A state dict does not fit the conversion table (missing, unexpected or malformed keys)."""


def _identity(tensors: Tensors, num_heads: int) -> Tensors:
    return list(tensors)


def _pack_qkv(tensors: Tensors, num_heads: int) -> Tensors:
    """HF query, key, value ``[heads*head_dim, ...]`` → TE qkv ``[heads*3*head_dim, ...]``."""
    q, k, v = tensors
    if not (q.shape == k.shape == v.shape) or q.shape[0] % num_heads:
        raise ConversionError(
            f"query/key/value shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)} "
            f"cannot be packed into {num_heads} heads"
        )
    rest = q.shape[1:]
    stacked = torch.stack((q, k, v)).reshape(3, num_heads, -1, *rest)  # [3, heads, hd, ...]
    return [stacked.transpose(0, 1).reshape(-1, *rest).contiguous()]  # [heads*3*hd, ...]


def _unpack_qkv(tensors: Tensors, num_heads: int) -> Tensors:
    """TE qkv ``[heads*3*head_dim, ...]`` → HF query, key, value ``[heads*head_dim, ...]``."""
    (qkv,) = tensors
    if qkv.shape[0] % (3 * num_heads):
        raise ConversionError(f"fused qkv of shape {tuple(qkv.shape)} cannot be split into 3 × {num_heads} heads")
    rest = qkv.shape[1:]
    per_head = qkv.reshape(num_heads, 3, -1, *rest).transpose(0, 1)  # [3, heads, hd, ...]
    return [t.reshape(-1, *rest).contiguous() for t in per_head.unbind(0)]


@dataclass(frozen=True)
class Rule:
    """HF names ⇄ TE names, with the transform each way. ``{i}`` stands for the layer index."""

    hf: tuple[str, ...]
    te: tuple[str, ...]
    to_te: Transform = _identity
    to_hf: Transform = _identity

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf[0]


def _same(*names: str) -> list[Rule]:
    return [Rule((n,), (n,)) for n in names]


def _renamed(hf_prefix: str, te_prefix: str, leaves=("weight", "bias")) -> list[Rule]:
    L = "bert.encoder.layer.{i}."
    return [Rule((f"{L}{hf_prefix}.{x}",), (f"{L}{te_prefix}.{x}",)) for x in leaves]


_QKV = "bert.encoder.layer.{i}.attention.self."

RULES: tuple[Rule, ...] = (
    *_same(
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    ),
    *(
        Rule(
            tuple(f"{_QKV}{p}.{leaf}" for p in ("query", "key", "value")),
            (f"bert.encoder.layer.{{i}}.self_attention.qkv.{leaf}",),
            _pack_qkv,
            _unpack_qkv,
        )
        for leaf in ("weight", "bias")
    ),
    *_renamed("attention.output.dense", "self_attention.proj"),
    *_renamed("attention.output.LayerNorm", "layernorm"),
    *_renamed("intermediate.dense", "layernorm_mlp.fc1"),
    *_renamed("output.dense", "layernorm_mlp.fc2"),
    *_renamed("output.LayerNorm", "layernorm_mlp.layer_norm"),
    *_same(
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias",
    ),
)

# The MLM decoder is tied to the word embeddings (and its bias to cls.predictions.bias) in both
# layouts. Files may or may not store the tied copies; when they do, they must equal their source.
TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}

# Keys that hold no parameter: buffers older transformers saved, and TE's FP8 metadata.
_IGNORED_EXACT = {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}
_IGNORED_SUFFIX = "._extra_state"


def is_ignored(key: str) -> bool:
    return key in _IGNORED_EXACT or key.endswith(_IGNORED_SUFFIX)


def expand(rules: Iterable[Rule], num_layers: int) -> list[Rule]:
    """The rules with ``{i}`` filled in for every layer, checked to name each key once."""
    out: list[Rule] = []
    for rule in rules:
        layers = range(num_layers) if rule.per_layer else [None]
        for i in layers:
            fill = (lambda n: n.format(i=i)) if i is not None else (lambda n: n)
            out.append(Rule(tuple(map(fill, rule.hf)), tuple(map(fill, rule.te)), rule.to_te, rule.to_hf))
    for side in ("hf", "te"):
        names = [n for r in out for n in getattr(r, side)]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConversionError(f"conversion table names {side} keys twice: {sorted(dupes)}")
    return out


def layout_keys(layout: str, num_layers: int) -> list[str]:
    """Every parameter key of a layout ("hf" or "te"), tied copies excluded."""
    return [n for r in expand(RULES, num_layers) for n in getattr(r, layout)]


def detect_layout(keys: Iterable[str]) -> str:
    """ "hf" or "te", from the names in a state dict; a clear error for anything else."""
    keys = list(keys)
    hf = any(".attention.self.query.weight" in k for k in keys)
    te = any(".self_attention.qkv.weight" in k for k in keys)
    if hf and te:
        raise ConversionError("state dict mixes HF (attention.self.query) and TE (qkv) layer keys")
    if not (hf or te):
        sample = ", ".join(sorted(keys)[:5])
        raise ConversionError(
            "state dict is neither an HF nor a TE Geneformer BertForMaskedLM "
            f"(no attention.self.query or self_attention.qkv weights; first keys: {sample})"
        )
    return "hf" if hf else "te"


def count_layers(keys: Iterable[str]) -> int:
    idx = {int(k.split(".")[3]) for k in keys if k.startswith("bert.encoder.layer.")}
    return max(idx) + 1 if idx else 0


def canonical_tensors(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """The parameters proper: tied copies checked against their origin and dropped, non-parameter
    keys (old buffers, TE ``_extra_state``) dropped. Returns (tensors, tied keys, ignored keys)."""
    pending = dict(state_dict)
    tied_verified = []
    for tied, origin in TIED.items():
        if tied in pending:
            copy = pending.pop(tied)
            if origin not in pending or not torch.equal(copy, pending[origin]):
                raise ConversionError(f"{tied} is stored but is not equal to {origin}, its tie")
            tied_verified.append(tied)
    ignored = [k for k in pending if is_ignored(k)]
    for key in ignored:
        del pending[key]
    return pending, tied_verified, ignored


@dataclass
class ConversionReport:
    """What a conversion did with each source key (kept with the written checkpoint)."""

    converted: int
    tied_verified: list[str]
    ignored: list[str]


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], target: str, num_layers: int, num_heads: int
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert a full state dict to ``target`` ("te" or "hf") through ``RULES``."""
    if target not in ("te", "hf"):
        raise ConversionError(f"conversion target must be 'te' or 'hf', not {target!r}")
    source = "hf" if target == "te" else "te"
    found = detect_layout(state_dict)
    if found != source:
        raise ConversionError(f"asked to convert to {target}, but the checkpoint is already {found}")
    if count_layers(state_dict) != num_layers:
        raise ConversionError(f"config.json says {num_layers} layers, the weights hold {count_layers(state_dict)}")

    pending, tied_verified, ignored = canonical_tensors(state_dict)

    out: dict[str, torch.Tensor] = {}
    for rule in expand(RULES, num_layers):
        src_names, dst_names = (rule.hf, rule.te) if target == "te" else (rule.te, rule.hf)
        transform = rule.to_te if target == "te" else rule.to_hf
        missing = [n for n in src_names if n not in pending]
        if missing:
            raise ConversionError(f"checkpoint is missing {', '.join(missing)}")
        produced = transform([pending.pop(n) for n in src_names], num_heads)
        out.update(zip(dst_names, produced, strict=True))
    if pending:
        raise ConversionError(
            f"{len(pending)} checkpoint tensor(s) not covered by the conversion table: {', '.join(sorted(pending)[:8])}"
        )
    report = ConversionReport(len(state_dict) - len(tied_verified) - len(ignored), tied_verified, ignored)
    return out, report


def hf_parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The shape of every HF parameter implied by a config.json (tied copies excluded)."""
    H, I, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    P, T = config["max_position_embeddings"], config["type_vocab_size"]
    # First matching pattern wins; everything else is a [H] vector (LayerNorm, H-sized bias).
    patterns = (
        (r"word_embeddings\.weight$", (V, H)),
        (r"position_embeddings\.weight$", (P, H)),
        (r"token_type_embeddings\.weight$", (T, H)),
        (r"\.intermediate\.dense\.weight$", (I, H)),
        (r"\.intermediate\.dense\.bias$", (I,)),
        (r"layer\.\d+\.output\.dense\.weight$", (H, I)),
        (r"(query|key|value|dense)\.weight$", (H, H)),
        (r"^cls\.predictions\.bias$", (V,)),
    )
    shapes = {}
    for key in layout_keys("hf", config["num_hidden_layers"]):
        shapes[key] = next((s for pat, s in patterns if re.search(pat, key)), (H,))
    return shapes


def parameter_shapes(config: dict, layout: str) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of a layout, derived by running the table on meta tensors."""
    hf_shapes = hf_parameter_shapes(config)
    if layout == "hf":
        return hf_shapes
    meta = {k: torch.empty(s, device="meta") for k, s in hf_shapes.items()}
    te, _ = convert_state_dict(meta, "te", config["num_hidden_layers"], config["num_attention_heads"])
    return {k: tuple(v.shape) for k, v in te.items()}
