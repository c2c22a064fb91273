"""The Geneformer variants, as data.

Each entry holds the published ``config.json`` values of one variant (Hugging Face
``ctheodoris/Geneformer``, upstream commit 05fcbeb8), the tokenizer dictionary family it was
trained with, its special tokens and the official sha256 of its weight files (from the Git-LFS
pointers of the same commit), so that a user's local checkpoint can be verified byte for byte.

Adding a variant is one entry in ``VARIANTS``. ``tests/test_registry.py`` checks every entry
against the published config files when the shared data folder is present.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from models.errors import GfqualError

# Fields shared by every published Geneformer config.json (BERT, post-LN, ReLU, absolute
# positions). Only the shape fields and the dropouts differ between variants.
_COMMON_CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "hidden_act": "relu",
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
}

V1_SPECIAL_TOKENS = {"<pad>": 0, "<mask>": 1}
V2_SPECIAL_TOKENS = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}


@dataclass(frozen=True)
class WeightFile:
    """An official weight file: its name in the HF repo folder, sha256 and size in bytes."""

    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Variant:
    """One published Geneformer model: architecture, tokenizer family and official weights."""

    name: str
    hf_subfolder: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int
    dropout: float
    dictionary_family: str
    special_tokens: dict = field(hash=False)
    weight_files: tuple[WeightFile, ...] = ()
    extra_config: dict = field(default_factory=dict, hash=False)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def context(self) -> int:
        """Tokens per cell the model accepts (its position-embedding count)."""
        return self.max_position_embeddings

    @property
    def has_cls_eos(self) -> bool:
        return "<cls>" in self.special_tokens

    def bert_config(self) -> dict:
        """The variant's published config.json fields (without bookkeeping such as versions)."""
        return {
            **_COMMON_CONFIG,
            "num_hidden_layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "attention_probs_dropout_prob": self.dropout,
            "hidden_dropout_prob": self.dropout,
            **self.extra_config,
        }

    def official_sha256(self, filename: str) -> str | None:
        for wf in self.weight_files:
            if wf.filename == filename:
                return wf.sha256
        return None

    def summary(self) -> dict:
        """A flat, JSON-friendly description (used by ``gfqual variants``)."""
        out = dataclasses.asdict(self)
        out["weight_files"] = [dataclasses.asdict(w) for w in self.weight_files]
        out["head_dim"] = self.head_dim
        return out


_V2_EXTRA = {"classifier_dropout": None, "torch_dtype": "float32"}

_V2_104M = Variant(
    name="V2-104M",
    hf_subfolder="Geneformer-V2-104M",
    num_hidden_layers=12,
    hidden_size=768,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=4096,
    vocab_size=20275,
    dropout=0.1,
    dictionary_family="gc104M",
    special_tokens=V2_SPECIAL_TOKENS,
    weight_files=(
        WeightFile(
            "model.safetensors",
            "fff5cba29ddd8792991fa77b4872246fbe548a178cebda3775cdc72b67780e7f",
            417571156,
        ),
    ),
    extra_config=_V2_EXTRA,
)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            name="V1-10M",
            hf_subfolder="Geneformer-V1-10M",
            num_hidden_layers=6,
            hidden_size=256,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=2048,
            vocab_size=25426,
            dropout=0.02,
            dictionary_family="gc30M",
            special_tokens=V1_SPECIAL_TOKENS,
            weight_files=(
                WeightFile(
                    "model.safetensors",
                    "a5e33a757431643b3697de7ef6127950cdc49e06e58d4266b3a3ab191b683f14",
                    41183536,
                ),
                WeightFile(
                    "pytorch_model.bin",
                    "8d860e2125884475dd42bc2cd9a0e60c60808a7351241e08f2154931ffc142da",
                    41216562,
                ),
            ),
        ),
        _V2_104M,
        # V2-104M continually pretrained on cancer cell lines: same architecture, other weights.
        dataclasses.replace(
            _V2_104M,
            name="V2-104M_CLcancer",
            hf_subfolder="Geneformer-V2-104M_CLcancer",
            weight_files=(
                WeightFile(
                    "model.safetensors",
                    "827738139bfed4bafa9d1f3df7c6146da2e3b85f7225076adc32c6eda0ba4357",
                    417571156,
                ),
            ),
        ),
        # Same V2 family (gc104M dictionaries, 4,096 tokens, <cls>/<eos>), wider and deeper.
        dataclasses.replace(
            _V2_104M,
            name="V2-316M",
            hf_subfolder="Geneformer-V2-316M",
            num_hidden_layers=18,
            hidden_size=1152,
            num_attention_heads=18,
            intermediate_size=4608,
            weight_files=(
                WeightFile(
                    "model.safetensors",
                    "965ceccea81953d362081ef3843560a0e4fef88d396c28017881f1e94b1246f3",
                    1265455076,
                ),
            ),
        ),
    )
}

# Fields that decide the architecture: two configs equal on these describe the same network.
ARCHITECTURE_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "vocab_size",
)


class UnknownVariantError(GfqualError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence.
        return self.args[0]


def get_variant(name: str) -> Variant:
    """Look a variant up by its name, also accepting the HF folder name ("Geneformer-V1-10M")."""
    key = name.removeprefix("Geneformer-")
    if key not in VARIANTS:
        raise UnknownVariantError(f"unknown Geneformer variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return VARIANTS[key]


def variants_matching(config: dict) -> list[Variant]:
    """The registered variants whose architecture equals that of a config.json dict.

    V2-104M and V2-104M_CLcancer share an architecture, so this can return two entries.
    """
    return [v for v in VARIANTS.values() if all(config.get(f) == getattr(v, f) for f in ARCHITECTURE_FIELDS)]
