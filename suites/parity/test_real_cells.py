"""Parity on real cells: the 559-cell celltypist sample tokenized with the real dictionaries."""

from __future__ import annotations

import pytest

from harness.parity.run import ParitySpec, make_batch, run_parity
from models.hf import random_hf_model
from models.registry import get_variant

SAMPLE = "scrna/celltypist_sample/celltypist_sample_559cells_rawcounts.h5ad"


@pytest.mark.parametrize("variant", ["V1-10M", "V2-104M"])
def test_parity_on_real_cells(variant, shared_data):
    v = get_variant(variant)
    spec = ParitySpec(
        variant,
        "te-format-torch",
        "fp32",
        n_cells=3,
        max_len=64,
        h5ad=str(shared_data / SAMPLE),
        dicts=str(shared_data / "geneformer_dicts"),
    )
    batch = make_batch(spec, multiple=1)
    assert batch.attention_mask.eq(0).any(), "real-cell batches must include padding"
    if v.has_cls_eos:
        assert (batch.input_ids[:, 0] == v.special_tokens["<cls>"]).all()
    model = random_hf_model(v, seed=0)
    _, verdict = run_parity(spec, model, model, device="cpu")
    assert verdict["status"] == "pass" and verdict["cells"].startswith("real:")
