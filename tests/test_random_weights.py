"""Random weights without transformers (issue 28's start-up): the same tensors as the HF model's."""

from __future__ import annotations

import torch

from models.hf import random_hf_model
from models.registry import get_variant

V1 = get_variant("V1-10M")


def test_random_checkpoint_is_random_hf_models_weights_without_transformers():
    from models.random_weights import random_checkpoint

    want = dict(random_hf_model(V1, seed=5).named_parameters())
    got = random_checkpoint(V1, seed=5).parameters()
    assert list(got) == list(want)  # the same order: the same random stream
    assert all(torch.equal(got[k], want[k].detach()) for k in want)
