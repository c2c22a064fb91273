"""The registry of variants against the published Geneformer configs and their LFS pointers."""

from __future__ import annotations

import json

import pytest

from models.registry import VARIANTS, UnknownVariantError, get_variant, variants_matching

BOOKKEEPING = {"transformers_version", "_name_or_path", "use_cache", "gradient_checkpointing"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_registry_equals_the_published_config(variant, shared_data):
    v = VARIANTS[variant]
    published = json.loads((shared_data / "geneformer_model_configs" / v.hf_subfolder / "config.json").read_text())
    ours = v.bert_config()
    for key in set(published) - BOOKKEEPING:
        assert ours.get(key) == published[key], key
    assert set(ours) <= set(published) | {"torch_dtype", "classifier_dropout"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_registry_sha256_equals_the_lfs_pointers(variant, shared_data):
    pointers = json.loads((shared_data / "geneformer_model_configs/hf_lfs_pointers.json").read_text())["lfs_objects"]
    v = VARIANTS[variant]
    for wf in v.weight_files:
        assert pointers[f"{v.hf_subfolder}/{wf.filename}"] == {"lfs_sha256": wf.sha256, "size": wf.size}


def test_variant_lookup():
    assert get_variant("Geneformer-V2-316M") is VARIANTS["V2-316M"]
    with pytest.raises(UnknownVariantError, match="known variants: V1-10M"):
        get_variant("V9")
    assert [v.name for v in variants_matching(VARIANTS["V2-104M"].bert_config())] == ["V2-104M", "V2-104M_CLcancer"]
