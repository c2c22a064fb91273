"""The models themselves: the TE-format plain-torch forward equals HF (issue acceptance), the HF
attention implementations agree, and TE refuses to pretend on a machine without a GPU."""

from __future__ import annotations

import pytest
import torch

from harness.backends import build_backend
from harness.capability import probe
from harness.data.synthetic import synthetic_batch
from harness.parity.engine import capture
from harness.precision import get_precision
from harness.tolerances import CONVERSION_MAX_ABS, bounds_for
from models.errors import CannotRunHere
from models.hf import random_hf_model
from models.registry import VARIANTS


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_te_format_forward_matches_hf_fp32(variant):
    v = VARIANTS[variant]
    hf = random_hf_model(v, seed=3)
    batch = synthetic_batch(v, 3, 48, seed=3)
    assert batch.attention_mask.eq(0).any(), "the batch must contain padding"
    fp32 = get_precision("fp32")
    ref = capture(build_backend("hf-eager", hf, fp32, "cpu"), batch, "layer.0.output")
    cand = capture(build_backend("te-format-torch", hf, fp32, "cpu"), batch, "layer.0.output")
    for stage in ("final_hidden", "logits"):
        err = (ref[stage] - cand[stage]).abs().max().item()
        assert err <= CONVERSION_MAX_ABS, f"{variant} {stage}: max abs error {err:.2e}"


def test_eager_and_sdpa_references_agree():
    v = VARIANTS["V1-10M"]
    hf = random_hf_model(v, seed=4)
    batch = synthetic_batch(v, 3, 40, seed=4)
    fp32 = get_precision("fp32")
    eager = capture(build_backend("hf-eager", hf, fp32, "cpu"), batch, "layer.4.output")
    sdpa = capture(build_backend("hf-sdpa", hf, fp32, "cpu"), batch, "layer.4.output")
    (bound,) = [b for b in bounds_for(get_precision("fp32"), "logits") if b.metric == "max_abs"]
    assert (eager["logits"] - sdpa["logits"]).abs().max() <= bound.limit


def test_random_init_is_seeded_and_informative():
    v = VARIANTS["V1-10M"]
    a, b, c = (random_hf_model(v, seed=s).state_dict() for s in (5, 5, 6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["bert.embeddings.LayerNorm.weight"], c["bert.embeddings.LayerNorm.weight"])
    # no bias left at zero and no LayerNorm weight left at one: conversion faults must show
    assert a["bert.encoder.layer.0.attention.self.query.bias"].abs().min() > 0
    assert (a["bert.encoder.layer.0.output.LayerNorm.weight"] != 1).all()


@pytest.mark.skipif(probe().cuda, reason="checks the CPU-only behaviour")
def test_te_backend_skips_with_a_reason_without_gpu():
    assert probe().skip_reason("te", "fp32") == "TransformerEngine needs a CUDA GPU; none is visible"
    with pytest.raises(
        CannotRunHere, match="cannot run here: TransformerEngine needs a CUDA GPU.*te-format-torch runs"
    ):
        build_backend("te", random_hf_model(VARIANTS["V1-10M"], 0), get_precision("fp32"))


def test_fp8_on_a_non_te_backend_is_refused_with_a_reason():
    assert "has no FP8 path" in probe().skip_reason("hf-eager", "fp8-current")
