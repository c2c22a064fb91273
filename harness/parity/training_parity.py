"""Training parity end to end (``gfqual train-parity``): for each objective (MLM pretraining,
cell-classifier fine-tuning), variant and precision, the backward comparison (``backward.py``) and
the training trajectory (``trajectory.py``) of a candidate against the reference, as records.

Reference and candidate are built for training (``Backend(training=True)``): fp32 master weights,
mixed-precision products. The reference is HF in fp64 on every device: a backward pass through
twelve layers carries 1e-4 of rounding in fp32 alone (measured on the H200: HF fp32's own V2-104M
gradients are up to 1.1e-4 from fp64's, where one ReLU unit rounds across its kink), so fp32
cannot be the ground truth of an fp32 candidate. The peer, whose own distance from the reference widens a
bound, is HF at the candidate's peer precision (fp32 for fp32, bf16 for bf16 and FP8): computing
in it throughout for the gradients (as TE keeps its activations in bf16, where autocast would
keep HF's LayerNorms and residual stream in fp32: measured on the H200, TE's bf16 gradients were
1.5-2x HF-autocast's distance from fp32, and its trajectories as close), and in mixed precision
for the trajectories, as users train. A precision this machine cannot run is a skipped record
with its reason; a case that raises is an error record, and the run goes on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from harness.backend_names import OBJECTIVES
from harness.backends import build_backend
from harness.capability import probe
from harness.data.synthetic import synthetic_batch
from harness.parity.backward import compare_backward, gradients
from harness.parity.trajectory import compare_trajectories
from harness.precision import get_precision
from harness.progress import row_head
from harness.reasons import error_reason, skipped
from harness.tolerances import BACKWARD_MAX_REL_L2, TRAJECTORY_MAX, has_training_bounds
from harness.training import Trainee
from models.registry import get_variant

REFERENCE = "hf-eager"  # exact attention: the same reference backend forward parity uses
REFERENCE_PRECISION = "fp64"


@dataclass(frozen=True)
class TrainingSpec:
    variant: str
    candidate: str  # backend name
    precision: str
    objective: str = "mlm"  # harness.training.OBJECTIVES
    cells: int = 2
    length: int = 32  # tokens per cell (short: the backward of a full context is not what differs)
    steps: int = 50  # optimizer steps of the trajectory; 0: backward only
    seed: int = 0


GPU_PRECISIONS = ("fp32", "bf16", "fp8-delayed", "fp8-current", "fp8-block", "mxfp8")


def default_training_specs(
    device: str,
    variants: list[str],
    precisions: list[str] | None,
    steps: int | None,
    seed: int,
    objectives: list[str] | None = None,
) -> list[TrainingSpec]:
    """What ``gfqual train-parity`` runs, by hardware, unless told otherwise: each objective (MLM
    pretraining and cell-classifier fine-tuning); on a CPU the TE layout in plain PyTorch at fp32,
    2 cells of 32 tokens, 50 steps; on a GPU TE itself at fp32, bf16 and every FP8 recipe, 4 cells
    of 256 tokens, 200 steps."""
    if device == "cpu":
        template = TrainingSpec("", "te-format-torch", "", steps=50, seed=seed)
        precisions = precisions or ["fp32"]
    else:
        template = TrainingSpec("", "te", "", cells=4, length=256, steps=200, seed=seed)
        precisions = precisions or list(GPU_PRECISIONS)
    steps = template.steps if steps is None else steps
    return [
        replace(template, variant=v, precision=p, objective=o, steps=steps)
        for o in objectives or OBJECTIVES
        for v in variants
        for p in precisions
    ]


def run_training_case(spec: TrainingSpec, model, device: str | None = None) -> list[dict]:
    """The backward rows, the backward verdict and (``steps`` > 0) the trajectory verdict of one case."""
    device = device or probe().device
    precision = get_precision(spec.precision)
    base = {
        "variant": spec.variant,
        "backend": spec.candidate,
        "precision": spec.precision,
        "objective": spec.objective,
        "device": device,
    }
    reason = probe().skip_reason(spec.candidate, precision)
    if not reason and not has_training_bounds(precision):
        reason = f"no training tolerance for {spec.precision} in harness/tolerances.py"
    if reason:
        return [skipped({**base, "record": "backward_verdict"}, reason)]
    variant = get_variant(spec.variant)
    ref_precision = get_precision(REFERENCE_PRECISION)
    peer_precision = precision.peer
    context = {
        **base,
        "reference": f"{REFERENCE}@{ref_precision.name}",
        "peer": f"{REFERENCE}@{peer_precision}",
        "cells": spec.cells,
        "seq_len": spec.length,
        "seed": spec.seed,
    }

    def trainees(peer_training: bool) -> tuple[Trainee, Trainee, Trainee]:
        built = (
            build_backend(REFERENCE, model, ref_precision, device, training=True),
            build_backend(spec.candidate, model, precision, device, training=True),
            build_backend(REFERENCE, model, get_precision(peer_precision), device, training=peer_training),
        )
        reference, candidate, peer = (Trainee(b, spec.objective, variant, spec.seed) for b in built)
        return reference, candidate, peer

    batch = synthetic_batch(variant, spec.cells, spec.length, spec.seed, multiple=precision.token_multiple)
    # gradients: HF computing in the peer precision throughout (bf16 activations, as TE keeps
    # them; under autocast HF would keep its LayerNorms and residual stream in fp32)
    reference, candidate, peer = trainees(peer_training=False)
    if precision.is_fp8:  # delayed scaling takes its scales from earlier steps' amax: one backward first
        gradients(candidate, batch)
    rows, verdict = compare_backward(reference, candidate, peer, batch, variant, "te")
    records = [{**context, **r} for r in rows] + [
        {**context, **verdict, "attention_backend": candidate.backend.attention_backend}
    ]
    if spec.steps:
        del reference, candidate, peer
        # trajectories: HF as users train it (mixed precision), from the same weights, one batch
        # (MLM: with a new mask each step)
        reference, candidate, peer = trainees(peer_training=True)
        batches = [batch] * spec.steps
        steps, verdict = compare_trajectories(reference, candidate, batches, variant, "te", peer)
        mixed = " (mixed precision)" if get_precision(peer_precision).mixed else ""
        context = {**context, "peer": f"{REFERENCE}@{peer_precision}{mixed}"}
        records += [{**context, **r} for r in steps] + [{**context, **verdict}]
    if device == "cuda":
        torch.cuda.empty_cache()
    return records


def run_training_parity(specs: list[TrainingSpec], seed: int, progress=print) -> list[dict]:
    """Every case, one variant's random weights at a time, each verdict printed as it comes."""
    from models.hf import random_hf_model

    records: list[dict] = []
    for name in dict.fromkeys(s.variant for s in specs):
        model = random_hf_model(get_variant(name), seed)
        for spec in (s for s in specs if s.variant == name):
            try:
                case = run_training_case(spec, model)
            except Exception as exc:  # a kernel that cannot train this case is a finding: recorded
                case = [
                    {
                        "record": "backward_verdict",
                        "variant": spec.variant,
                        "backend": spec.candidate,
                        "precision": spec.precision,
                        "objective": spec.objective,
                        "status": "error",
                        "reason": error_reason(exc),
                    }
                ]
            records += case
            for r in case:
                if r["record"].endswith("verdict"):
                    progress(format_training_verdict(r))
    return records


def format_training_verdict(r: dict) -> str:
    head = f"{row_head(r)} {r.get('objective', 'mlm'):8s}"
    if r["status"] in ("skipped", "error"):
        return f"{head} {r['status'].upper()}: {r['reason']}"
    if r["record"] == "backward_verdict":
        where = f"  first diverging: {r['first_diverging_stage']}" if r["first_diverging_stage"] else ""
        return (
            f"{head} {r['status'].upper():5s} backward: worst {r['worst_stage']} rel_l2={r['worst_rel_l2']:.2e}; "
            f"loss {r['loss_candidate']:.5f} vs {r['loss_reference']:.5f}{where}"
        )
    return (
        f"{head} {r['status'].upper():5s} {r['steps']} steps: loss {r['loss_first']:.4f} -> "
        f"{r['loss_last_reference']:.4f} (candidate {r['loss_last_candidate']:.4f}), worst step rel diff "
        f"{r['max_step_loss_rel_diff']:.2e} (limit {r['loss_limit']:.2e}), weights rel_l2 "
        f"{r['final_weights_rel_l2']:.2e} (limit {r['weights_limit']:.2e}) {r['violations']}"
    )


def training_config(specs: list[TrainingSpec]) -> dict:
    """The ``config`` block of a training-parity result: what ran and the bounds that judged it."""
    from harness.training import LR, MASK_FRACTION, WARMUP_FRACTION, WEIGHT_DECAY

    return {
        "specs": [asdict(s) for s in specs],
        "optimizer": {"name": "AdamW", "lr": LR, "warmup_fraction": WARMUP_FRACTION, "weight_decay": WEIGHT_DECAY},
        "mask_fraction": MASK_FRACTION,
        "tolerances": {"backward_max_rel_l2": BACKWARD_MAX_REL_L2, "trajectory_max": TRAJECTORY_MAX},
    }
