"""Planted-fault controls: the gate must fail on every classic conversion bug, and name the
first stage where the candidate leaves the reference. Runs on the CPU (TE-format plain-torch
forward, fp32, against HF fp64) so every push checks that the gate still has teeth."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.parity.run import ParitySpec, run_parity
from models import convert
from models.checkpoint import Checkpoint
from models.registry import get_variant

VARIANT = "V2-104M"  # has <cls>/<eos>; 12 heads make head permutations meaningful
LAYER = "bert.encoder.layer.{i}."


def _qkv(sd, cfg, i=0):
    w = sd[LAYER.format(i=i) + "self_attention.qkv.weight"]
    return w.view(cfg["num_attention_heads"], 3, -1, w.shape[-1])


def swap_q_k(sd, cfg):
    w = _qkv(sd, cfg)
    w[:, [0, 1]] = w[:, [1, 0]].clone()


def permute_heads(sd, cfg):
    heads = cfg["num_attention_heads"]
    perm = torch.roll(torch.arange(heads), 1)
    for leaf in ("weight", "bias"):
        key = LAYER.format(i=0) + f"self_attention.qkv.{leaf}"
        t = sd[key]
        sd[key] = t.view(heads, -1, *t.shape[1:])[perm].reshape(t.shape).clone()


def transpose_proj(sd, cfg):
    key = LAYER.format(i=0) + "self_attention.proj.weight"
    sd[key] = sd[key].t().contiguous()


def scale_layernorm(sd, cfg):
    sd[LAYER.format(i=0) + "layernorm.weight"] *= 1.001


def wrong_epsilon(sd, cfg):
    cfg["layer_norm_eps"] = 1e-5  # TE's default, what a conversion that drops the config gets


def shift_positions(sd, cfg):
    key = "bert.embeddings.position_embeddings.weight"
    sd[key] = torch.roll(sd[key], 1, dims=0)


def drop_layer(sd, cfg):
    """Layer 2 disappears and the later layers move up one place."""
    n = cfg["num_hidden_layers"]
    for key in [k for k in sd if k.startswith(LAYER.format(i=2))]:
        del sd[key]
    for i in range(3, n):
        for key in [k for k in sd if k.startswith(LAYER.format(i=i))]:
            sd[key.replace(LAYER.format(i=i), LAYER.format(i=i - 1))] = sd.pop(key)
    cfg["num_hidden_layers"] = n - 1


def wrong_activation(sd, cfg):
    cfg["hidden_act"] = "gelu"


FAULTS = {
    "swapped Q/K": (swap_q_k, "layer.0.attention"),
    "heads permuted in fused QKV": (permute_heads, "layer.0.attention"),
    "transposed weight": (transpose_proj, "layer.0.attention"),
    "LayerNorm weight x1.001": (scale_layernorm, "layer.0.attention_norm"),
    "wrong epsilon": (wrong_epsilon, "embeddings"),
    "position embeddings shifted by one": (shift_positions, "embeddings"),
    "layer dropped": (drop_layer, "layer.2.attention"),
    "wrong activation": (wrong_activation, "layer.0.mlp"),
}


@pytest.fixture(scope="module")
def reference(hf_model):
    """The HF model every fault is judged against, and its unmodified TE-layout conversion."""
    model = hf_model(get_variant(VARIANT))
    te, _ = convert.convert_state_dict(model.state_dict(), "te", 12, 12)
    return model, te


def _checkpoint(state_dict, config) -> Checkpoint:
    where = Path("<planted fault>")
    return Checkpoint(where, config, state_dict, where, "te")


def _run(model, candidate: Checkpoint):
    spec = ParitySpec(VARIANT, "te-format-torch", "fp32", n_cells=3, max_len=48)
    return run_parity(spec, model, candidate, device="cpu")


def test_unmodified_conversion_passes(reference):
    model, te = reference
    _, verdict = _run(model, _checkpoint(dict(te), model.config.to_dict()))
    assert verdict["status"] == "pass"


@pytest.mark.parametrize("fault", list(FAULTS))
def test_gate_catches(fault, reference):
    mutate, first_stage = FAULTS[fault]
    model, te = reference
    state = {k: v.clone() for k, v in te.items()}
    config = model.config.to_dict()
    mutate(state, config)
    records, verdict = _run(model, _checkpoint(state, config))
    assert verdict["status"] == "fail", f"{fault} passed the gate"
    assert verdict["first_diverging_stage"] == first_stage
