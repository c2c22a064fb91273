"""The training gate: each case's gradients (backward parity) and AdamW trajectory against the
reference, per objective (MLM pretraining, cell-classifier fine-tuning), and whether a precision
trains like the reference on fresh cells (its held-out loss within the reference seeds' band)."""

from __future__ import annotations

from harness.parity.band_rule import judge_band
from harness.precision import get_precision
from harness.tolerances import training_band_allowance
from harness.verdict.checks import Check, check, counted_status, records

WHAT = {"backward_verdict": "gradients", "trajectory_verdict": "trajectory", "band_verdict": "held-out band"}


def band_judged_today(result: dict, verdict: dict) -> dict:
    """A band verdict re-derived from its own file's runs (``band_point`` records) and baselines by
    today's rule: its stored status and its inconclusive and unstable flags are never trusted. Unchanged
    when it cannot be (an error verdict: its runs left no rows; a file without its spec or runs)."""
    config = result.get("config", {})
    spec, cells = config.get("spec"), config.get("cells")
    if verdict.get("status") == "error" or not spec or not cells:
        return verdict
    points = [r for r in result["records"] if r.get("record") == "band_point"]
    reference = [
        r for r in points if (r["backend"], r["precision"]) == (spec["reference"], spec["reference_precision"])
    ]
    candidate = [r for r in points if (r["backend"], r["precision"]) == (verdict["backend"], verdict["precision"])]
    if not reference or not candidate:
        return verdict
    allowance = training_band_allowance(get_precision(verdict["precision"]))
    majority, unigram, held_out = cells.get("majority_share"), cells.get("unigram_loss"), cells.get("held_out", 0)
    today = judge_band(reference, candidate, allowance, majority, unigram, cells=held_out)
    if today["status"] != verdict["status"]:
        today["violations"] = (
            f"(its runs give {today['status']}; the file said {verdict['status']}) {today['violations']}"
        )
    return {**verdict, **today}


def training_checks(results: list[dict]) -> list[Check]:
    out = []
    for res, r in records(results, "parity", *WHAT):
        if r["record"] == "band_verdict":
            r = band_judged_today(res, r)
        if status := counted_status(r):
            case = f"{r.get('objective', 'mlm')} {WHAT[r['record']]} {r['variant']} {r['backend']} {r['precision']}"
            if "lr" in r:  # a band at another learning rate is another test, never a re-run of this one
                case += f" lr {r['lr']:g}"
            c = check(res, r, "training", case, r.get("reason") or r.get("violations") or "", status)
            if status == "fail" and r.get("inconclusive"):
                c.klass = "inconclusive"  # a band the reference learned nothing in: it cannot judge
            elif status == "fail" and r.get("unstable"):
                c.klass = "instability"  # a band the reference itself spikes in: the learning rate's matter
            out.append(c)
    return out
