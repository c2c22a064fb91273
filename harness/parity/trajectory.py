"""Training trajectories: the same optimizer steps on the reference and on a candidate, compared
step by step.

Both start from the same weights (and, fine-tuning a classifier, the same seeded head) and take
one AdamW step (``harness.training``: the Geneformer notebooks' lr 5e-5 with linear warm-up,
weight decay 0.001) per batch of the same sequence (MLM: each with a fresh seeded 15% mask),
dropout off, so both train the same deterministic function. The engine repeats one batch
(``training_parity``): over 200 steps it is memorized (V2-104M's loss fell from 10.1 to 0.29 on
the H200) and the end of the trajectory turns chaotic, HF fp32 differing from fp64 by 3% of a nat
from summation order alone; the peer measures that. AdamW is element-wise, so the TE layout's
packed QKV takes exactly the updates HF's Q, K and V take. Compared: each step's loss (difference
relative to the reference's loss, or absolute in nats below ``harness.tolerances.LOSS_FLOOR``)
and, at the end, every weight (the head's too), the candidate's mapped into HF names. As in
backward parity, a candidate is held to the larger of the table's bound and
``BACKWARD_PEER_FACTOR`` times its HF peer's own distance from the reference; the final weights
may also differ by what ReLU units flipped by rounding leave once AdamW has stepped them
(``harness.tolerances.kink_allowance``): on the CPU, the TE layout's V2-104M classifier ended
3.7e-4 from fp64 on one thread and 1.6e-5 on two, 93% of it in fc1 weights, 5% in fc2, and the
key bias (whose exact gradient is zero) none (TOLERANCES.md).
"""

from __future__ import annotations

import torch

from harness.data.batching import Batch
from harness.parity.backward import BACKWARD_PEER_FACTOR, in_hf_names
from harness.tolerances import kink_allowance, step_loss_difference, trajectory_bound
from harness.training import Trainee, adamw, optimizer_step
from models.registry import Variant


def train(trainee: Trainee, batches: list[Batch]) -> tuple[list[float], float]:
    """One AdamW step of the trainee's loss per batch (MLM: each with its own mask); (the losses,
    the sum of the steps' learning rates)."""
    optimizer, schedule = adamw(trainee.named_parameters().values(), len(batches))
    losses, lr_sum = [], 0.0
    for step, batch in enumerate(batches):
        lr_sum += optimizer.param_groups[0]["lr"]
        losses.append(float(optimizer_step(lambda: trainee.loss(batch, step), optimizer)))
        schedule.step()
    return losses, lr_sum


def _weights(trainee: Trainee, layout: str, variant: Variant) -> torch.Tensor:
    """Every weight (the head's too), in HF names and order, as one fp64 vector."""
    weights = in_hf_names(
        {n: p.detach().double().cpu() for n, p in trainee.named_parameters().items()}, layout, variant
    )
    return torch.cat([weights[n].flatten() for n in sorted(weights)])


def _run(trainee: Trainee, layout: str, batches: list[Batch], variant: Variant) -> tuple[list[float], torch.Tensor]:
    """(losses, final weights) of one step per batch."""
    return train(trainee, batches)[0], _weights(trainee, layout, variant)


ENDS = 5


def _ends(losses: list[float]) -> tuple[float, float]:
    """Mean loss of the first and of the last ``ENDS`` steps (of each half, when shorter)."""
    k = max(1, min(ENDS, len(losses) // 2))
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def _distance(ref: tuple, other: tuple) -> tuple[list[float], float]:
    """(each step's judged loss difference, final weights' relative L2) of ``other`` from ``ref``."""
    (ref_losses, ref_w), (losses, w) = ref, other
    return (
        [step_loss_difference(r, c) for r, c in zip(ref_losses, losses)],
        float((w - ref_w).norm() / ref_w.norm()),
    )


def compare_trajectories(
    reference: Trainee,
    candidate: Trainee,
    batches: list[Batch],
    variant: Variant,
    candidate_layout: str,
    peer: Trainee | None = None,
) -> tuple[list[dict], dict]:
    """(one row per step: each model's loss, the verdict): per-step loss agreement and the final
    weights' distance, each within the precision's bound or ``BACKWARD_PEER_FACTOR`` times the
    peer's own (when a peer runs)."""
    start = _weights(reference, "hf", variant)
    ref_losses, lr_sum = train(reference, batches)
    ref = ref_losses, _weights(reference, "hf", variant)
    cand = _run(candidate, candidate_layout, batches, variant)
    step_diff, weights_rel = _distance(ref, cand)
    worst = max(step_diff)
    kinks = kink_allowance(variant.hidden_size, lr_sum, float(ref[1].norm()))
    table = trajectory_bound(candidate.backend.precision)
    bound = {"loss": table["loss"], "weights": max(table["weights"], kinks)}
    peer_worst = peer_weights = None
    peer_losses: list[float | None] = [None] * len(batches)
    if peer is not None:
        peer_run = _run(peer, "hf", batches, variant)
        peer_losses = list(peer_run[0])
        peer_diffs, peer_weights = _distance(ref, peer_run)
        peer_worst = max(peer_diffs)
        bound = {
            "loss": max(bound["loss"], BACKWARD_PEER_FACTOR * peer_worst),
            "weights": max(bound["weights"], BACKWARD_PEER_FACTOR * peer_weights),
        }
    ref_losses, cand_losses = ref[0], cand[0]
    violations = (
        []
        if worst <= bound["loss"]
        else [f"loss step {step_diff.index(worst)}: rel diff {worst:.3g} > {bound['loss']:.3g}"]
    )
    if not weights_rel <= bound["weights"]:
        violations.append(f"final weights rel L2 {weights_rel:.3g} > {bound['weights']:.3g}")
    first, last = _ends(ref_losses)
    if len(batches) > 1 and not last < first:
        violations.append(f"the reference's loss did not fall (first steps {first:.4f}, last steps {last:.4f})")
    ref_update = ref[1] - start
    rows = [
        {"record": "trajectory_step", "step": i, "loss_reference": r, "loss_candidate": c, "loss_peer": p}
        for i, (r, c, p) in enumerate(zip(ref_losses, cand_losses, peer_losses))
    ]
    return rows, {
        "record": "trajectory_verdict",
        "steps": len(batches),
        "status": "fail" if violations else "pass",
        "violations": "; ".join(violations),
        "max_step_loss_rel_diff": worst,
        "final_weights_rel_l2": weights_rel,
        "loss_limit": bound["loss"],
        "weights_limit": bound["weights"],
        "peer_max_step_loss_rel_diff": peer_worst,
        "peer_final_weights_rel_l2": peer_weights,
        "weights_kink_allowance": kinks,
        # reported, not judged: how differently training moved the weights (the update's relative L2)
        "update_rel_l2": float((cand[1] - start - ref_update).norm() / ref_update.norm()),
        # means over the first and the last ENDS steps: a step's loss depends on the genes it masks
        "loss_first": first,
        "loss_last_reference": last,
        "loss_last_candidate": _ends(cand_losses)[1],
    }
