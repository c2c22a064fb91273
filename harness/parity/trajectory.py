"""Training trajectories: the same optimizer steps on the reference and on a candidate, compared
step by step.

Both start from the same weights and take ``steps`` AdamW steps (``harness.training``: the
Geneformer notebooks' lr 5e-5 with linear warm-up, weight decay 0.001) on the same sequence of
masked batches (a fresh seeded 15% mask per step), dropout off, so both train the same
deterministic function. AdamW is element-wise, so the TE layout's packed QKV takes exactly the
updates HF's Q, K and V take. Compared: each step's loss (relative difference) and, at the end,
every weight, the candidate's mapped into HF names. As in backward parity, a candidate at a
reduced precision is held to the larger of the table's bound and ``BACKWARD_PEER_FACTOR`` times
its HF peer's own distance from the reference (HF trained at the candidate's peer precision).
"""

from __future__ import annotations

import torch

from harness.backends import Backend
from harness.data.batching import Batch
from harness.parity.backward import BACKWARD_PEER_FACTOR
from harness.tolerances import trajectory_bound
from harness.training import adamw, masked_batch, optimizer_step
from models import convert
from models.registry import Variant


def train(backend: Backend, batch: Batch, variant: Variant, steps: int, seed: int = 0) -> list[float]:
    """``steps`` AdamW steps of the MLM loss on ``batch`` (a new mask each step); the losses."""
    optimizer, schedule = adamw(backend, steps)
    losses = []
    for step in range(steps):
        masked, labels = masked_batch(batch, variant, seed + step)
        losses.append(float(optimizer_step(backend, optimizer, masked, labels)))
        schedule.step()
    return losses


def _weights(backend: Backend, layout: str, variant: Variant) -> torch.Tensor:
    """Every weight, in HF names and order, as one fp64 vector."""
    weights = {n: p.detach().double().cpu() for n, p in backend.model.named_parameters()}
    if layout != "hf":
        weights = convert.convert_state_dict(weights, "hf", variant.num_hidden_layers, variant.num_attention_heads)[0]
    return torch.cat([weights[n].flatten() for n in sorted(weights)])


def _run(backend: Backend, layout: str, batch: Batch, variant: Variant, steps: int) -> tuple[list[float], torch.Tensor]:
    """(losses, final weights) of ``steps`` steps."""
    return train(backend, batch, variant, steps), _weights(backend, layout, variant)


def _distance(ref: tuple, other: tuple) -> tuple[float, float]:
    """(largest per-step relative loss difference, final weights' relative L2) of ``other`` from ``ref``."""
    (ref_losses, ref_w), (losses, w) = ref, other
    return (
        max(abs(c - r) / abs(r) for r, c in zip(ref_losses, losses)),
        float((w - ref_w).norm() / ref_w.norm()),
    )


def compare_trajectories(
    reference: Backend,
    candidate: Backend,
    batch: Batch,
    variant: Variant,
    steps: int,
    candidate_layout: str,
    peer: Backend | None = None,
) -> dict:
    """One verdict record: per-step loss agreement and the final weights' distance, each within
    the precision's bound or ``BACKWARD_PEER_FACTOR`` times the peer's own (when a peer runs)."""
    start = _weights(reference, "hf", variant)
    ref = _run(reference, "hf", batch, variant, steps)
    cand = _run(candidate, candidate_layout, batch, variant, steps)
    worst, weights_rel = _distance(ref, cand)
    bound = dict(trajectory_bound(candidate.precision))
    peer_worst = peer_weights = None
    if peer is not None:
        peer_worst, peer_weights = _distance(ref, _run(peer, "hf", batch, variant, steps))
        bound = {
            "loss": max(bound["loss"], BACKWARD_PEER_FACTOR * peer_worst),
            "weights": max(bound["weights"], BACKWARD_PEER_FACTOR * peer_weights),
        }
    ref_losses, cand_losses = ref[0], cand[0]
    step_diff = [abs(c - r) / abs(r) for r, c in zip(ref_losses, cand_losses)]
    violations = (
        []
        if worst <= bound["loss"]
        else [f"loss step {step_diff.index(worst)}: rel diff {worst:.3g} > {bound['loss']:.3g}"]
    )
    if not weights_rel <= bound["weights"]:
        violations.append(f"final weights rel L2 {weights_rel:.3g} > {bound['weights']:.3g}")
    if not ref_losses[-1] < ref_losses[0]:
        violations.append(f"the reference's loss did not fall ({ref_losses[0]:.4f} -> {ref_losses[-1]:.4f})")
    ref_update = ref[1] - start
    return {
        "record": "trajectory_verdict",
        "steps": steps,
        "status": "fail" if violations else "pass",
        "violations": "; ".join(violations),
        "max_step_loss_rel_diff": worst,
        "final_weights_rel_l2": weights_rel,
        "loss_limit": bound["loss"],
        "weights_limit": bound["weights"],
        "peer_max_step_loss_rel_diff": peer_worst,
        "peer_final_weights_rel_l2": peer_weights,
        # reported, not judged: how differently training moved the weights (the update's relative L2)
        "update_rel_l2": float((cand[1] - start - ref_update).norm() / ref_update.norm()),
        "loss_first": ref_losses[0],
        "loss_last_reference": ref_losses[-1],
        "loss_last_candidate": cand_losses[-1],
    }
