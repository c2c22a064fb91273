"""Backward parity: the gradients of one training loss, reference against candidate, stage by stage
and parameter by parameter.

Both run the same batch and objective (``harness.training``: Geneformer's MLM pretraining loss or
cell-classifier fine-tuning's, dropout off, mixed precision as users train). Compared:

* per stage, the gradient flowing back into each tap's output (the same stages as forward parity:
  each layer's attention, post-attention LayerNorm, MLP and output; the embeddings), at the real
  token positions only;
* per parameter, each gradient, the candidate's mapped through the conversion table into the HF
  layout (the conversion is a linear re-indexing, so it maps gradients as it maps weights: TE's
  packed QKV gradient becomes HF's Q, K and V gradients). A parameter the candidate has no
  gradient for is a failure of its own ("no gradient"), as a detached path would be.

Judged on relative L2: each row against the precision's bound (``harness.tolerances``) or 1.5 times
HF's own largest error at the candidate's precision on the same gradient in any layer, whichever
is larger (rationale: TOLERANCES.md and ``compare_backward``). Some gradients are zero in exact
arithmetic (attention's key bias: softmax ignores a shift shared by a query's scores); what they
hold is rounding, so a relative error of them measures nothing. A gradient whose reference is
below ``GRADIENT_FLOOR`` of the whole gradient's norm is judged against that whole norm instead,
within the candidate precision's unit roundoff: a wrong path still shows, as a gradient of the
size real ones have. The first failing row in backward order (from the logits down, then the
parameters) names where the backward pass went wrong.
"""

from __future__ import annotations

import re
import warnings

import torch

from harness.data.batching import Batch
from harness.tolerances import backward_bound
from harness.training import HEAD_PREFIX, Trainee
from models import convert
from models.registry import Variant

BACKWARD_PEER_FACTOR = 1.5  # a candidate may be this much further from the reference than HF at its precision
GRADIENT_FLOOR = 1e-5  # of the whole reference gradient's norm: below it a gradient is zero in exact arithmetic


def gradients(trainee: Trainee, batch: Batch) -> tuple[dict, dict, set, float]:
    """(stage -> gradient at its output [real tokens, H], parameter -> gradient (zeros where none
    arrived), the parameters no gradient reached, loss) of one backward pass of the trainee's loss."""
    backend = trainee.backend
    params = trainee.named_parameters()
    for p in params.values():
        p.grad = None
    real = batch.attention_mask.bool().to(backend.device)
    stage_grads: dict[str, torch.Tensor] = {}

    def keep(stage: str, grad_output) -> None:
        stage_grads[stage] = grad_output[0][real].detach().double().cpu()

    handles = [
        tap.module.register_full_backward_hook(lambda _m, _gi, go, stage=tap.stage: keep(stage, go))
        for tap in backend.taps()
        if tap.stage != "logits"
    ]
    try:
        with warnings.catch_warnings():
            # the embeddings' inputs are token ids: PyTorch notes that their hook sees output gradients only
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss = trainee.loss(batch)
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    missing = {n for n, p in params.items() if p.grad is None}
    grads = {n: (torch.zeros_like(p) if p.grad is None else p.grad).detach().double().cpu() for n, p in params.items()}
    return stage_grads, grads, missing, float(loss.detach())


def in_hf_names(tensors: dict, layout: str, variant: Variant) -> dict:
    """A trainee's tensors (its model's, in ``layout``, and its head's) under HF names: the model's
    through the conversion table, the head's as they are."""
    if layout == "hf":
        return tensors
    head = {n: t for n, t in tensors.items() if n.startswith(HEAD_PREFIX)}
    model = {n: t for n, t in tensors.items() if n not in head}
    converted = convert.convert_state_dict(model, "hf", variant.num_hidden_layers, variant.num_attention_heads)[0]
    return {**converted, **head}


def as_hf_layout(grads: dict, missing: set, layout: str, variant: Variant) -> tuple[dict, set]:
    """Parameter gradients under HF names, and the HF parameters a missing gradient feeds."""
    marks = in_hf_names({n: torch.full_like(g, float(n in missing)) for n, g in grads.items()}, layout, variant)
    return in_hf_names(grads, layout, variant), {k for k, v in marks.items() if v.abs().sum() > 0}


def same_in_every_layer(stage: str) -> str:
    """The name a gradient shares with its counterparts in the other layers ("layer.8.mlp" and
    "bert.encoder.layer.8.intermediate.dense.weight" lose their layer index)."""
    return re.sub(r"(^|\.)layer\.\d+\.", r"\1layer.*.", stage)


def compare_backward(
    reference: Trainee,
    candidate: Trainee,
    peer: Trainee,
    batch: Batch,
    variant: Variant,
    candidate_layout: str,
) -> tuple[list[dict], dict]:
    """(one row per stage and per parameter, the verdict) of the candidate's gradients against the
    reference's. Each row's limit is the precision's backward bound, or ``BACKWARD_PEER_FACTOR``
    times the peer's (HF at the candidate's precision) largest error on the same gradient in any
    layer, whichever is larger: rounding crosses a ReLU's kink or loses digits in a LayerNorm
    backward in whichever layer chance puts it (on the H200, TE fp32 flipped one fc1 unit of
    V2-104M's layer 8 and HF fp32 one of layers 0, 4, 6 and 7, each raising that layer's fc1
    gradient error from 7e-5 to 1.0-1.6e-4), and a candidate is not asked to beat HF itself."""
    ref_stages, ref_params, _, ref_loss = gradients(reference, batch)
    peer_stages, peer_params, _, _ = gradients(peer, batch)
    cand_stages, cand_params, cand_missing, cand_loss = gradients(candidate, batch)
    cand_params, lost = as_hf_layout(cand_params, cand_missing, candidate_layout, variant)
    precision = candidate.backend.precision
    bound = backward_bound(precision)
    whole = float(torch.cat([g.flatten() for g in ref_params.values()]).norm())

    def measure(stage: str, kind: str, ref, peer_grad, cand, scale: float) -> dict:
        """One gradient's errors: relative to its own norm, or (zero in exact arithmetic) to
        ``scale``, the whole gradient's norm, within the precision's unit roundoff."""
        if cand is None:
            return {
                "stage": stage,
                "kind": kind,
                "rel_l2": None,
                "peer_rel_l2": None,
                "status": "fail",
                "violations": "no gradient reached this parameter"
                if kind.startswith("parameter")
                else "stage missing from the candidate",
            }
        own = float(ref.norm())
        rounding_only = own < GRADIENT_FLOOR * scale
        norm, row_bound = (scale, precision.unit_roundoff) if rounding_only else (own, bound)
        return {
            "stage": stage,
            "kind": kind,
            "relative_to": "the whole gradient (zero in exact arithmetic)" if rounding_only else "itself",
            "rel_l2": float((cand - ref).norm()) / norm,
            "peer_rel_l2": float((peer_grad - ref).norm()) / norm,
            "bound": row_bound,
        }

    rows = [
        # scale 0: an activation gradient is never zero, so it is always judged against itself
        measure(stage, "activation gradient", ref_stages[stage], peer_stages[stage], cand_stages.get(stage), 0.0)
        for stage in [t.stage for t in reversed(reference.backend.taps()) if t.stage in ref_stages]  # backward order
    ] + [
        measure(name, "parameter gradient", ref, peer_params[name], None if name in lost else cand_params[name], whole)
        for name, ref in sorted(ref_params.items())
        if reference.trains(name)
    ]
    peer_worst: dict[str, float] = {}
    for r in rows:
        if r["peer_rel_l2"] is not None:
            key = same_in_every_layer(r["stage"])
            peer_worst[key] = max(peer_worst.get(key, 0.0), r["peer_rel_l2"])
    for r in rows:
        if r["rel_l2"] is None:
            continue
        limit = max(r.pop("bound"), BACKWARD_PEER_FACTOR * peer_worst[same_in_every_layer(r["stage"])])
        ok = r["rel_l2"] <= limit  # NaN fails
        r |= {
            "limit": limit,
            "status": "pass" if ok else "fail",
            "violations": "" if ok else f"rel_l2={r['rel_l2']:.3g} > {limit:.3g}",
        }
    rows = [{"record": "backward_stage", "order": i, **r} for i, r in enumerate(rows)]
    failed = [r for r in rows if r["status"] == "fail"]
    judged = [r for r in rows if r["rel_l2"] is not None]
    worst = max(judged, key=lambda r: r["rel_l2"] / r["limit"])
    verdict = {
        "record": "backward_verdict",
        "status": "fail" if failed else "pass",
        "bound": bound,
        "first_diverging_stage": failed[0]["stage"] if failed else None,
        "failed": len(failed),
        "violations": "; ".join(f"{r['stage']}: {r['violations']}" for r in failed[:3]),
        "worst_stage": worst["stage"],
        "worst_rel_l2": worst["rel_l2"],
        "loss_reference": ref_loss,
        "loss_candidate": cand_loss,
    }
    return rows, verdict
