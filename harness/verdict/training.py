"""The training gate: each case's gradients (backward parity) and AdamW trajectory against the
reference, per objective (MLM pretraining, cell-classifier fine-tuning), and whether a precision
trains like the reference on fresh cells (its held-out loss within the reference seeds' band)."""

from __future__ import annotations

from harness.verdict.checks import Check, check, counted_status, records

WHAT = {"backward_verdict": "gradients", "trajectory_verdict": "trajectory", "band_verdict": "held-out band"}


def training_checks(results: list[dict]) -> list[Check]:
    out = []
    for res, r in records(results, "parity", *WHAT):
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
