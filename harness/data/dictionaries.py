"""The ``--dicts`` option: the dictionaries a command tokenizes with. Apart from the tokenizer
(which owns the Dictionaries themselves) so that neither the tokenizer nor the synthetic data
module imports the other."""

from __future__ import annotations

from harness.data.synthetic import synthetic_dictionaries
from harness.data.tokenizer import Dictionaries
from models.registry import Variant


def resolve_dictionaries(spec: str, variant: Variant) -> Dictionaries:
    """``--dicts``: a Geneformer dictionary folder (holding gc30M/ and gc104M/, or the family's
    files), or ``synthetic`` for made-up dictionaries of the variant's size (offline runs)."""
    if spec == "synthetic":
        return synthetic_dictionaries(variant)
    return Dictionaries.load(spec, variant.dictionary_family)
