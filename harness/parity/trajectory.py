"""Training trajectories: the same optimizer steps on the reference and on a candidate, compared
step by step.

Both start from the same weights and take ``steps`` AdamW steps (the Geneformer notebooks'
settings: lr 5e-5 with linear warm-up, weight decay 0.001) on the same sequence of masked batches
(a fresh seeded 15% mask per step, ``harness.parity.backward.masked_batch``), in eval mode so that
dropout is off and both train the same deterministic function. AdamW is element-wise, so the TE
layout's packed QKV takes exactly the updates HF's Q, K and V take. Compared: each step's loss
(relative difference) and, at the end, every weight, the candidate's mapped into HF names.
"""

from __future__ import annotations

import torch

from harness.backends import Backend
from harness.data.batching import Batch
from harness.parity.backward import masked_batch, mlm_loss
from harness.tolerances import trajectory_bound
from models import convert
from models.registry import Variant

LR, WARMUP_FRACTION, WEIGHT_DECAY = 5e-5, 0.1, 0.001


def train(backend: Backend, batch: Batch, variant: Variant, steps: int, seed: int = 0) -> list[float]:
    """``steps`` AdamW steps of the MLM loss on ``batch`` (a new mask each step); the losses."""
    optimizer = torch.optim.AdamW(backend.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    warmup = max(1, int(WARMUP_FRACTION * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    losses = []
    for step in range(steps):
        masked, labels = masked_batch(batch, variant, seed + step)
        optimizer.zero_grad(set_to_none=True)
        loss = mlm_loss(backend, masked, labels)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


def compare_trajectories(
    reference: Backend, candidate: Backend, batch: Batch, variant: Variant, steps: int, candidate_layout: str
) -> dict:
    """One verdict record: per-step loss agreement and the final weights' distance."""
    ref_losses = train(reference, batch, variant, steps)
    cand_losses = train(candidate, batch, variant, steps)
    step_diff = [abs(c - r) / abs(r) for r, c in zip(ref_losses, cand_losses)]
    ref_weights = {n: p.detach().double().cpu() for n, p in reference.model.named_parameters()}
    cand_weights = {n: p.detach().double().cpu() for n, p in candidate.model.named_parameters()}
    if candidate_layout != "hf":
        cand_weights = convert.convert_state_dict(
            cand_weights, "hf", variant.num_hidden_layers, variant.num_attention_heads
        )[0]
    names = sorted(ref_weights)
    ref_flat = torch.cat([ref_weights[n].flatten() for n in names])
    cand_flat = torch.cat([cand_weights[n].flatten() for n in names])
    weights_rel = float((cand_flat - ref_flat).norm() / ref_flat.norm())
    bound = trajectory_bound(candidate.precision)
    worst = max(step_diff)
    fell = ref_losses[-1] < ref_losses[0]
    violations = (
        [f"loss step {step_diff.index(worst)}: rel diff {worst:.3g} > {bound['loss']:.3g}"]
        if not worst <= bound["loss"]
        else []
    )
    if not weights_rel <= bound["weights"]:
        violations.append(f"final weights rel L2 {weights_rel:.3g} > {bound['weights']:.3g}")
    if not fell:
        violations.append(f"the reference's loss did not fall ({ref_losses[0]:.4f} -> {ref_losses[-1]:.4f})")
    return {
        "record": "trajectory_verdict",
        "steps": steps,
        "status": "fail" if violations else "pass",
        "violations": "; ".join(violations),
        "max_step_loss_rel_diff": worst,
        "final_weights_rel_l2": weights_rel,
        "loss_first": ref_losses[0],
        "loss_last_reference": ref_losses[-1],
        "loss_last_candidate": cand_losses[-1],
    }
