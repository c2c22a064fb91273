"""The training gate: each case's gradients (backward parity) and AdamW trajectory against the
reference, per objective (MLM pretraining, cell-classifier fine-tuning), and whether a precision
trains like the reference on fresh cells (its held-out loss within the reference seeds' band)."""

from __future__ import annotations

from harness.parity.band_rule import band_runs, judge_precision
from harness.verdict.checks import Check, check, counted_status, records

WHAT = {"backward_verdict": "gradients", "trajectory_verdict": "trajectory", "band_verdict": "held-out band"}


def band_judged_today(result: dict, verdict: dict, runs: dict[tuple[str, str], list[dict]]) -> dict:
    """A band verdict re-derived from its own file's runs (``runs``: ``band_runs`` of its records)
    and baselines by today's rule: its stored status and its inconclusive and unstable flags are
    never trusted. Unchanged when it cannot be (an error verdict: its runs left no rows; a file
    without its spec or runs)."""
    config = result.get("config", {})
    spec, cells = config.get("spec"), config.get("cells")
    if verdict.get("status") == "error" or not spec or not cells:
        return verdict
    reference = runs.get((spec["reference"], spec["reference_precision"]))
    candidate = runs.get((verdict["backend"], verdict["precision"]))
    if not reference or not candidate:
        return verdict
    today = judge_precision(reference, candidate, verdict["precision"], cells, cells.get("held_out", 0))
    if today["status"] != verdict["status"]:
        today["violations"] = (
            f"(its runs give {today['status']}; the file said {verdict['status']}) {today['violations']}"
        )
    return {**verdict, **today}


def training_checks(results: list[dict]) -> list[Check]:
    out = []
    runs: dict[int, dict] = {}  # each band file's runs, grouped once for all its verdicts
    for res, r in records(results, "parity", *WHAT):
        if r["record"] == "band_verdict":
            if id(res) not in runs:
                runs[id(res)] = band_runs(res["records"])
            r = band_judged_today(res, r, runs[id(res)])
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
