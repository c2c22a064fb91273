"""Layer-by-layer parity: run two (or three) backends on the same cells and compare every stage.

Memory: the candidate (and the peer, when the tolerance needs one) run first and keep each stage
only at the real, unpadded positions, in their own low precision; the reference then runs with
hooks that compare each stage the moment it is computed and free the stored copy. Only one
reference activation is alive at a time, so V2-316M at 4,096 tokens fits on one GPU.

Verdict: a stage fails when any bound of ``harness.tolerances`` is exceeded or any value is not
finite; the first failing stage in forward order names where a conversion went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.backends import Backend, hooks
from harness.data.batching import Batch
from harness.embeddings import cell_embedding_stage, mean_over_genes
from harness.parity.metrics import StageStats
from harness.precision import Precision
from harness.tolerances import bounds_for, stage_class

GATED_ORDER_LAST = ("cell_embedding",)  # derived, so judged after the forward chain


def _real_rows(tensor: torch.Tensor, batch: Batch) -> torch.Tensor:
    return tensor[batch.attention_mask.to(tensor.device).bool()]


def capture(backend: Backend, batch: Batch, emb_stage: str) -> dict[str, torch.Tensor]:
    """Every stage of one forward pass, at real positions only, plus the cell embedding."""
    store: dict[str, torch.Tensor] = {}

    def keep(stage: str, tensor: torch.Tensor) -> None:
        store[stage] = _real_rows(tensor, batch).detach()
        if stage == emb_stage:
            store["cell_embedding"] = mean_over_genes(tensor, batch.gene_mask.to(tensor.device)).detach()

    with hooks(backend.taps(), keep):
        backend.forward(batch)
    return store


@dataclass
class StageComparison:
    stage: str
    order: int
    candidate: StageStats
    peer: StageStats | None = None
    metrics: dict = field(default_factory=dict)
    peer_metrics: dict | None = None
    missing: bool = False


def compare(
    reference: Backend,
    candidate: Backend,
    batches: list[Batch],
    peer: Backend | None = None,
    emb_layer: int = -1,
) -> list[StageComparison]:
    """Compare ``candidate`` (and ``peer``) against ``reference`` stage by stage over ``batches``."""
    num_layers = len(reference.model.bert.encoder.layer)
    emb_stage = cell_embedding_stage(num_layers, emb_layer)
    stages: dict[str, StageComparison] = {}

    def stats_for(stage: str) -> StageComparison:
        if stage not in stages:
            topk = stage == "logits"
            stages[stage] = StageComparison(
                stage, len(stages), StageStats(topk), StageStats(topk) if peer is not None else None
            )
        return stages[stage]

    for batch in batches:
        cand = capture(candidate, batch, emb_stage)
        peer_store = capture(peer, batch, emb_stage) if peer is not None else None

        def check(stage: str, ref_rows: torch.Tensor) -> None:
            entry = stats_for(stage)
            if stage not in cand:  # e.g. the candidate lacks a layer
                entry.missing = True
            else:
                entry.candidate.add(ref_rows, cand.pop(stage))
            if peer_store is not None:
                entry.peer.add(ref_rows, peer_store.pop(stage))

        def on_reference(stage: str, tensor: torch.Tensor) -> None:
            check(stage, _real_rows(tensor, batch))
            if stage == emb_stage:
                pending_cell.append(mean_over_genes(tensor, batch.gene_mask.to(tensor.device)))

        pending_cell: list[torch.Tensor] = []
        with hooks(reference.taps(), on_reference):
            reference.forward(batch)
        check("cell_embedding", pending_cell.pop())
        if cand:
            raise RuntimeError(f"candidate produced stages the reference did not: {sorted(cand)}")

    for entry in stages.values():
        entry.metrics = entry.candidate.result() if not entry.missing else StageStats.missing_result()
        entry.peer_metrics = entry.peer.result() if entry.peer is not None else None
    return sorted(stages.values(), key=lambda e: (e.stage in GATED_ORDER_LAST, e.order))


def judge_stage(entry: StageComparison, precision: Precision) -> tuple[str, str]:
    """(status, violations) of one stage against the tolerance table."""
    violations, unjudged = [], []
    for bound in bounds_for(precision, entry.stage):
        limit = bound.threshold(entry.peer_metrics)
        value = entry.metrics.get(bound.metric)
        if limit is None:
            unjudged.append(bound.describe())
        elif entry.missing:
            continue
        elif value is None or not value <= limit:  # NaN fails
            violations.append(f"{bound.metric}={value:.3g} > {limit:.3g} ({bound.describe()})")
    if entry.missing:
        violations.append("stage missing from the candidate")
    if entry.metrics["nonfinite"]:
        violations.append(f"{entry.metrics['nonfinite']} non-finite values")
    status = "fail" if violations else ("reported" if unjudged else "pass")
    return status, "; ".join(violations + [f"not judged (no peer): {u}" for u in unjudged])


def judge_tensors(
    stage: str, precision: Precision, reference: torch.Tensor, candidate: torch.Tensor, peer: torch.Tensor | None = None
) -> tuple[str, str, StageComparison]:
    """Judge tensors computed outside a hooked forward (cell embeddings, one kernel's output) as
    ``stage``: rows ``[N, D]`` of the candidate (and its peer) against the reference."""

    def stats(other: torch.Tensor) -> StageStats:
        s = StageStats()
        s.add(reference, other)
        return s

    entry = StageComparison(stage, 0, stats(candidate), stats(peer) if peer is not None else None)
    entry.metrics = entry.candidate.result()
    entry.peer_metrics = entry.peer.result() if entry.peer is not None else None
    status, violations = judge_stage(entry, precision)
    return status, violations, entry


def judge(comparisons: list[StageComparison], precision: Precision) -> tuple[list[dict], dict]:
    """Per-stage rows with pass/fail against the tolerance table, and the run's verdict."""
    rows, first_fail = [], None
    for entry in comparisons:
        status, violations = judge_stage(entry, precision)
        if status == "fail" and first_fail is None:
            first_fail = entry.stage
        layer = int(entry.stage.split(".")[1]) if entry.stage.startswith("layer.") else None
        row = {
            "stage": entry.stage,
            "stage_class": stage_class(entry.stage),
            "layer": layer,
            "order": entry.order,
            **entry.metrics,
            "status": status,
            "violations": violations,
        }
        if entry.peer_metrics:
            row.update({f"peer_{k}": v for k, v in entry.peer_metrics.items() if k not in ("elements",)})
        rows.append(row)
    worst = max(rows, key=lambda r: (r["rel_l2"] != r["rel_l2"], r["rel_l2"]))  # NaN counts as worst
    verdict = {
        "status": "fail" if first_fail else ("pass" if all(r["status"] == "pass" for r in rows) else "reported"),
        "first_diverging_stage": first_fail,
        "worst_stage": worst["stage"],
        "worst_rel_l2": worst["rel_l2"],
        "final_hidden_max_abs": next(r["max_abs"] for r in rows if r["stage"] == "final_hidden"),
        "logits_max_abs": next(r["max_abs"] for r in rows if r["stage"] == "logits"),
        "logits_top1": next(r["top1"] for r in rows if r["stage"] == "logits"),
    }
    return rows, verdict
