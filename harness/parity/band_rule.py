"""The rule of a training band (``training_band.py`` runs it): does a candidate's held-out loss,
averaged over seeds, stay within the band the reference's seeds span at every evaluation step
(and a classifier's accuracy within theirs)? With what it reports beside the verdict: whether the
reference learned anything a band can judge (else *inconclusive*), whether the reference itself
spiked (a failure then is *instability*), whether its seeds split on learning (a failure then is
*inconclusive*), and the worst paired gap of a seed's runs. Thresholds
and their measurements: harness/TOLERANCES.md."""

from __future__ import annotations

import math

from harness.precision import get_precision
from harness.tolerances import training_band_allowance

# A classifier has learned more than the class frequencies when its held-out accuracy beats always
# answering the most common class by this much (5 points: 3 of 64 held-out cells, beyond one lucky cell).
LEARNED_MARGIN = 0.05
# MLM has learned more than the gene frequencies when its held-out loss beats the unigram loss by
# this much (5% in perplexity). At H200 lr 1e-3, 1,000 steps, V1-10M's HF reference ended 0.011 nats
# under the unigram loss after spikes of 0.3-0.4 nats: a hair under the frequencies is not learning.
LEARNED_MARGIN_NATS = 0.05
# A reference seed is unstable when its held-out loss climbs back this far above its best so far
# (at H200 lr 1e-3, V1-10M MLM's HF seed 2 went 7.94 -> 8.54 in 200 steps): a band as wide as the
# reference's own jumps says the learning rate, not the precision; a failure in it is "instability".
INSTABILITY_RISE = 0.1
ROUNDING = 1e-9  # the mean of equal values can exceed them in its last bit: not outside the band


def judge_band(
    reference: list[dict],
    candidate: list[dict],
    allowance: float,
    majority_share: float | None = None,
    unigram: float | None = None,
    cells: int = 0,
) -> dict:
    """The candidate's held-out loss, averaged over seeds, within the reference seeds' band at every
    evaluation step, widened by ``allowance`` times the reference's mean loss there; the verdict
    with its worst step, the worst paired gap (``paired_gap``), and *inconclusive* when the
    reference learned nothing the band could judge (``learned``: ``majority_share`` for a classifier,
    ``unigram``, the gene-frequency baseline, for MLM)."""
    steps = sorted({r["step"] for r in reference})
    worst: dict = {"margin": -math.inf}
    for step in steps:
        ref = [r["held_out_loss"] for r in reference if r["step"] == step]
        cand = [r["held_out_loss"] for r in candidate if r["step"] == step]
        if not cand or not all(math.isfinite(x) for x in cand):
            diverged = f"diverged: held-out loss {cand} at step {step}"
            return {"status": "fail", "worst_step": step, "violations": diverged}
        mean, widen = sum(cand) / len(cand), allowance * sum(ref) / len(ref)
        lo, hi = min(ref) - widen, max(ref) + widen
        margin = max(lo - mean, mean - hi)  # > 0: outside the band by that many nats
        if margin > worst["margin"]:
            worst = {"margin": margin, "step": step, "mean": mean, "lo": min(ref), "hi": max(ref)}
    last = steps[-1]
    accuracy = "" if majority_share is None else accuracy_outside(reference, candidate, steps, allowance, cells)
    final = {
        "final_loss_reference": _mean(reference, last, "held_out_loss"),
        "final_loss_candidate": _mean(candidate, last, "held_out_loss"),
        "final_accuracy_reference": _mean(reference, last, "held_out_accuracy"),
        "final_accuracy_candidate": _mean(candidate, last, "held_out_accuracy"),
    }
    outside = worst["margin"] > ROUNDING or bool(accuracy)
    cannot_judge = "" if outside else learned(reference, steps[0], last, majority_share, unigram)
    rise = largest_rise(reference)
    # the reference spiked, and the candidate left the band by no more than the spike (a larger
    # miss, or an accuracy miss, is the candidate's own and keeps its class)
    unstable = rise["rise"] >= INSTABILITY_RISE and worst["margin"] <= rise["rise"] and not accuracy
    if outside and not unstable:
        cannot_judge = split_seeds(reference, last, majority_share, unigram)
    spiked = (
        f"the reference itself is unstable here: its seed {rise['seed']}'s held-out loss rose {rise['rise']:.2f} "
        f"nats above its best by step {rise['step']}"
        if unstable and outside
        else ""
    )
    return {
        "status": "fail" if outside or cannot_judge else "pass",
        "inconclusive": bool(cannot_judge),
        "unstable": unstable,
        "reference_rise": rise["rise"],
        "reference_rise_seed": rise["seed"],
        "reference_rise_step": rise["step"],
        "worst_step": worst["step"],
        "worst_loss_candidate": worst["mean"],
        "band_low": worst["lo"],
        "band_high": worst["hi"],
        "allowance": allowance,
        "outside_by": worst["margin"] if worst["margin"] > ROUNDING else 0.0,
        **final,
        **({"majority_share": majority_share} if majority_share is not None else {}),
        **({"unigram_loss": unigram} if unigram is not None else {}),
        **paired_gap(reference, candidate),
        "violations": "; ".join(
            filter(
                None,
                [
                    f"held-out loss {worst['mean']:.4f} at step {worst['step']} outside the reference seeds' "
                    f"[{worst['lo']:.4f}, {worst['hi']:.4f}] widened by {allowance:.0%} of their mean"
                    if worst["margin"] > ROUNDING
                    else "",
                    accuracy,
                    cannot_judge,
                    spiked,
                ],
            )
        ),
    }


def judge_precision(reference: list[dict], candidate: list[dict], precision: str, beat: dict, cells: int) -> dict:
    """``judge_band`` for a candidate at ``precision``: its allowance from the tolerance table, and
    the baselines the reference had to beat (``beat``: ``majority_share``, ``unigram_loss``)."""
    allowance = training_band_allowance(get_precision(precision))
    return judge_band(
        reference, candidate, allowance, beat.get("majority_share"), beat.get("unigram_loss"), cells=cells
    )


def band_runs(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """A band file's held-out rows (``band_point`` records), by (backend, precision)."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("record") == "band_point":
            runs.setdefault((r["backend"], r["precision"]), []).append(r)
    return runs


def accuracy_outside(
    reference: list[dict], candidate: list[dict], steps: list[int], allowance: float, cells: int
) -> str:
    """The classifier's second judged quantity: its held-out accuracy, averaged over seeds, within
    the reference seeds' [lowest, highest] at every step, widened by ``allowance`` times their mean
    and by one held-out cell (1/``cells``: accuracy moves in steps of one cell, and a cell near the
    decision boundary flips with any rounding); where it is furthest outside, or ""."""
    worst = (0.0, "")
    for step in steps:
        ref = [r["held_out_accuracy"] for r in reference if r["step"] == step]
        cand = [r["held_out_accuracy"] for r in candidate if r["step"] == step]
        mean, widen = sum(cand) / len(cand), allowance * sum(ref) / len(ref) + (1 / cells if cells else 0.0)
        margin = max(min(ref) - widen - mean, mean - max(ref) - widen)
        if margin > max(worst[0], ROUNDING):
            band = f"[{min(ref):.3f}, {max(ref):.3f}]"
            worst = (margin, f"held-out accuracy {mean:.3f} at step {step} outside the reference seeds' {band}")
    return worst[1]


def learned(
    reference: list[dict], first: int, last: int, majority_share: float | None, unigram: float | None = None
) -> str:
    """Why the reference learned nothing a band can judge ("cannot judge: ..."), or "" when it did."""
    start, end = _mean(reference, first, "held_out_loss"), _mean(reference, last, "held_out_loss")
    if not end < start:
        did_not = f"({start:.4f} at step {first}, {end:.4f} at {last})"
        return f"cannot judge: the reference's held-out loss did not fall {did_not}"
    if unigram is not None and end > unigram - LEARNED_MARGIN_NATS:
        return (
            f"cannot judge: the reference learned only the gene frequencies (held-out loss {end:.4f}; the training "
            f"cells' gene frequencies alone give {unigram:.4f}, and learning means {LEARNED_MARGIN_NATS} nats below)"
        )
    accuracy = _mean(reference, last, "held_out_accuracy")
    if majority_share is not None and accuracy < majority_share + LEARNED_MARGIN:
        return (
            f"cannot judge: the reference learned only the class frequencies (held-out accuracy {accuracy:.3f}; "
            f"the most common class is {majority_share:.3f} of the held-out cells)"
        )
    return ""


def split_seeds(reference: list[dict], last: int, majority_share: float | None, unigram: float | None) -> str:
    """Why a band the reference's seeds disagree in cannot judge a miss ("cannot judge: ..."), or "":
    some seeds learned by the last step (``learned``'s margins, seed by seed) and others did not.
    Learning from random weights can leave a plateau at a random step (H200, V2-104M classifier at
    lr 2.5e-5, 500 steps: HF bf16 escaped in 1 of 3 seeds, TE bf16 in 2 of 3, each recipe in 1 or
    2): the band then spans where escapes fall, and a candidate whose runs escape earlier or later
    misses it by chance; a few seeds cannot tell a rate of escape."""
    final = {r["seed"]: r for r in reference if r["step"] == last}
    if majority_share is not None:
        did = {s: r["held_out_accuracy"] >= majority_share + LEARNED_MARGIN for s, r in final.items()}
    elif unigram is not None:
        did = {s: r["held_out_loss"] <= unigram - LEARNED_MARGIN_NATS for s, r in final.items()}
    else:
        return ""
    learned_seeds = sorted(s for s, ok in did.items() if ok)
    if not learned_seeds or len(learned_seeds) == len(did):
        return ""
    return (
        f"cannot judge: the reference's seeds split on learning ({len(learned_seeds)} of {len(did)} learned by "
        f"step {last}: seed {', '.join(map(str, learned_seeds))}): where a run leaves the plateau is chance here, "
        f"and {len(did)} seeds cannot judge how often"
    )


def largest_rise(rows: list[dict]) -> dict:
    """How far any seed's held-out loss climbed back above its best so far, and where: a spike or a
    blow-up, which a learning curve that only falls (up to noise) never shows."""
    worst = {"rise": 0.0, "seed": None, "step": None}
    for seed in sorted({r["seed"] for r in rows}):
        best = math.inf
        for r in sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["step"]):
            if r["held_out_loss"] - best > worst["rise"]:
                worst = {"rise": r["held_out_loss"] - best, "seed": seed, "step": r["step"]}
            best = min(best, r["held_out_loss"])
    return worst


def paired_gap(reference: list[dict], candidate: list[dict]) -> dict:
    """The largest held-out-loss gap between a candidate run and the reference run of the same seed."""
    ref = {(r["seed"], r["step"]): r["held_out_loss"] for r in reference}
    gaps = [(abs(r["held_out_loss"] - ref[k]), k) for r in candidate if (k := (r["seed"], r["step"])) in ref]
    if not gaps:
        return {}
    gap, (seed, step) = max(gaps)
    return {"paired_gap": gap, "paired_gap_seed": seed, "paired_gap_step": step}


def _mean(rows: list[dict], step: int, key: str) -> float:
    values = [r[key] for r in rows if r["step"] == step]
    return sum(values) / len(values)
