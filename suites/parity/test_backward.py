"""Backward parity (``pytest suites/parity -k backward``): the gradients of Geneformer's MLM loss,
the TE-layout model in fp32 against HF in fp64 on the CPU, every activation and parameter
gradient; and backward planted faults, which leave the forward exactly right and must still fail
here, named at the first stage (in backward order) or the parameter they break.

The check's memory is its parameters' (three models' weights and gradients, and fp64 copies of
each), not its 2 x 32 tokens: at full depth it peaked at 8.1 GB of RSS on V2-104M and 20.5 GB on
V2-316M. The default run checks the variants deeper than V1-10M at ``SLICE_LAYERS`` of their
layers: their width, heads, vocabulary, conversion and every kind of parameter, within the 8 GB
the README's test command fits in; full depth is marked ``slow`` (``pytest suites/parity -m slow
-k backward``), and ``gfqual train-parity`` checks it too."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from harness.backends import build_backend
from harness.data.synthetic import synthetic_batch
from harness.parity.backward import compare_backward
from harness.parity.trajectory import compare_trajectories
from harness.precision import get_precision
from harness.training import Trainee
from models import convert
from models.hf import random_hf_model
from models.registry import VARIANTS, Variant, get_variant

SLICE_LAYERS = 2  # layers of a deep variant the default run checks (module docstring)


def _variant(name: str, layers: int | None = None) -> Variant:
    """The variant, or its first ``layers`` layers (the rest of its config unchanged)."""
    return dataclasses.replace(get_variant(name), num_hidden_layers=layers or get_variant(name).num_hidden_layers)


def _trainees(
    hf_model, variant: str, objective: str = "mlm", plant=None, layers: int | None = None
) -> tuple[Trainee, Trainee, Trainee]:
    """(HF fp64, the TE layout in fp32 with ``plant`` applied, HF fp32) on one objective, from
    ``hf_model``'s model (suites/conftest.py)."""
    model = hf_model(_variant(variant, layers))
    built = (
        build_backend("hf-eager", model, get_precision("fp64"), "cpu"),
        build_backend("te-format-torch", model, get_precision("fp32"), "cpu"),
        build_backend("hf-eager", model, get_precision("fp32"), "cpu"),
    )
    if plant:
        plant(built[1].model)
    reference, candidate, peer = (Trainee(b, objective, _variant(variant, layers)) for b in built)
    return reference, candidate, peer


def _compare(hf_model, variant: str, plant=None, objective: str = "mlm", layers: int | None = None):
    v = _variant(variant, layers)
    reference, candidate, peer = _trainees(hf_model, variant, objective, plant, layers)
    return compare_backward(reference, candidate, peer, synthetic_batch(v, 2, 32, seed=0), v, "te")


def _depths() -> list:
    """V1-10M whole; each deeper variant sliced by default and whole under ``slow``."""
    cases = []
    for name, v in VARIANTS.items():
        if v.num_hidden_layers <= VARIANTS["V1-10M"].num_hidden_layers:
            cases.append(pytest.param(name, None, id=name))
            continue
        cases.append(pytest.param(name, SLICE_LAYERS, id=f"{name}-{SLICE_LAYERS}-layers"))
        cases.append(pytest.param(name, None, id=name, marks=pytest.mark.slow))
    return cases


@pytest.mark.parametrize("variant, layers", _depths())
def test_backward_parity_of_the_te_layout(variant, layers, hf_model):
    rows, verdict = _compare(hf_model, variant, layers=layers)
    assert verdict["status"] == "pass", verdict["violations"]
    assert verdict["loss_candidate"] == pytest.approx(verdict["loss_reference"], rel=1e-6)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"activation gradient", "parameter gradient"}
    assert sum(r["kind"] == "parameter gradient" for r in rows) == len(
        list(hf_model(_variant(variant, layers)).parameters())
    )
    # attention's key bias has no gradient in exact arithmetic: judged against the whole gradient
    key_bias = [r for r in rows if r["stage"].endswith("attention.self.key.bias")]
    assert key_bias and all(r["relative_to"].startswith("the whole gradient") for r in key_bias)
    assert all(r["relative_to"] == "itself" for r in rows if r["kind"] == "activation gradient")


def detached_residual(model):
    """Layer 2's attention residual carries no gradient: the forward is unchanged."""
    layer = model.bert.encoder.layer[2]

    def forward(self, x, blocked):
        x = self.layernorm(x.detach() + self.self_attention(x, blocked))
        return self.layernorm_mlp.layer_norm(x + self.layernorm_mlp(x))

    layer.forward = types.MethodType(forward, layer)


def layernorm_weight_gradient_cut(model):
    """Layer 1's post-attention LayerNorm weight is used detached: same value, no gradient."""
    norm = model.bert.encoder.layer[1].layernorm

    def forward(self, x):
        return torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight.detach(), self.bias, self.eps)

    norm.forward = types.MethodType(forward, norm)


def frozen_bias(model):
    """fc2's bias in layer 0 is frozen, as a conversion that loads it as a buffer would leave it."""
    model.bert.encoder.layer[0].layernorm_mlp.fc2.bias.requires_grad_(False)


def gradient_scaled_in_backward(model):
    """Layer 3's MLP output gradient doubled on the way back (a wrong custom backward)."""

    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    mlp = model.bert.encoder.layer[3].layernorm_mlp
    inner = mlp.forward
    mlp.forward = lambda x: Double.apply(inner(x))


def key_bias_gradient_leak(model):
    """Layer 0's key bias receives a gradient of the size its neighbours have, where exact
    arithmetic gives none (a wrong fused-QKV backward): judged against the whole gradient within
    fp32's rounding, it must still fail."""
    v = get_variant("V1-10M")
    marks = {n: torch.zeros_like(p) for n, p in random_hf_model(v, 0).state_dict().items()}  # HF names, shapes
    marks["bert.encoder.layer.0.attention.self.key.bias"] += 1
    te_marks = convert.convert_state_dict(marks, "te", v.num_hidden_layers, v.num_attention_heads)[0]
    key = te_marks["bert.encoder.layer.0.self_attention.qkv.bias"].bool()
    bias = model.bert.encoder.layer[0].self_attention.qkv.bias
    bias.register_hook(lambda grad: grad + key * grad.abs().mean())


@pytest.mark.parametrize(
    "plant, where",
    [
        (detached_residual, "layer.1.output"),  # the gradient layer 2 hands back to layer 1
        (layernorm_weight_gradient_cut, "bert.encoder.layer.1.attention.output.LayerNorm.weight"),
        (frozen_bias, "bert.encoder.layer.0.output.dense.bias"),
        (gradient_scaled_in_backward, "layer.3.attention_norm"),  # what flows out of the doubled MLP
        (key_bias_gradient_leak, "bert.encoder.layer.0.attention.self.key.bias"),
    ],
    ids=lambda p: getattr(p, "__name__", ""),
)
def test_backward_planted_faults_are_caught_and_named(plant, where, hf_model):
    rows, verdict = _compare(hf_model, "V1-10M", plant)
    assert verdict["status"] == "fail", f"{plant.__name__} passed the backward gate"
    assert verdict["first_diverging_stage"] == where, [r["stage"] for r in rows if r["status"] == "fail"][:5]


def test_fifty_adamw_steps_follow_the_reference_and_a_wrong_backward_does_not(hf_model):
    """Training trajectories (harness/parity/trajectory.py): 50 AdamW steps of the MLM loss with the
    notebooks' learning rate, TE layout fp32 against HF fp64, within the table's bound; the same
    steps with a detached residual leave it."""
    v = get_variant("V1-10M")
    batches = [synthetic_batch(v, 2, 32, seed=0)] * 50

    def run(plant=None):
        reference, candidate, _ = _trainees(hf_model, "V1-10M", "mlm", plant)
        return compare_trajectories(reference, candidate, batches, v, "te")

    steps, good = run()
    assert good["status"] == "pass", good["violations"]
    assert good["loss_last_reference"] < good["loss_first"] - 0.5  # it trained
    assert [s["step"] for s in steps] == list(range(50))  # every step's losses, for the report's curves
    assert steps[-1]["loss_reference"] < steps[0]["loss_reference"] - 0.5
    assert sum(s["loss_reference"] for s in steps[:5]) / 5 == pytest.approx(good["loss_first"])
    _, bad = run(detached_residual)
    assert bad["status"] == "fail" and "final weights" in bad["violations"]
    # rounding's allowance (ReLU units flipped, stepped by AdamW) stays far below a wrong backward
    assert bad["final_weights_rel_l2"] > 5 * max(bad["weights_kink_allowance"], good["weights_limit"])


def test_fine_tuning_a_cell_classifier_follows_the_reference_and_a_wrong_backward_does_not(hf_model):
    """The classification objective (Geneformer's Classifier: BertForSequenceClassification's
    pooler and classifier on the encoder, seeded cell labels): its gradients, the head's among them,
    pass against HF fp64, a detached residual is caught where it sits, and 30 AdamW steps learn the
    labels in both models alike."""
    v = get_variant("V1-10M")
    rows, verdict = _compare(hf_model, "V1-10M", objective="classify")
    assert verdict["status"] == "pass", verdict["violations"]
    head = {r["stage"] for r in rows if r["stage"].startswith("classifier.")}
    assert head == {f"classifier.{m}.{p}" for m in ("pooler", "classifier") for p in ("weight", "bias")}
    _, bad = _compare(hf_model, "V1-10M", detached_residual, objective="classify")
    assert bad["status"] == "fail" and bad["first_diverging_stage"] == "layer.1.output"
    reference, candidate, _ = _trainees(hf_model, "V1-10M", "classify")
    steps, trajectory = compare_trajectories(reference, candidate, [synthetic_batch(v, 2, 32, seed=0)] * 30, v, "te")
    assert trajectory["status"] == "pass", trajectory["violations"]
    assert steps[-1]["loss_reference"] < 0.5 * steps[0]["loss_reference"]  # the labels were learned
