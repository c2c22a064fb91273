"""The parity gate: each forward parity case's verdict (``gfqual parity``, ``pytest suites/parity``)
and each check of TE's attention kernel alone, counted through the one status rule."""

from __future__ import annotations

from harness.verdict.checks import Check, check, counted_status, records


def parity_checks(results: list[dict]) -> list[Check]:
    out = []
    for res, r in records(results, "parity", "verdict"):
        if status := counted_status(r):
            where = r.get("worst_stage")
            detail = r.get("reason") or (f"worst {where} rel L2 {r.get('worst_rel_l2')}" if where else "")
            if r.get("first_diverging_stage"):
                detail += f", first diverging {r['first_diverging_stage']}"
            out.append(check(res, r, "parity", f"{r['variant']} {r['backend']} {r['precision']}", detail, status))
    for res, r in records(results, "parity", "attention_kernel"):
        if status := counted_status(r):
            case = f"attention kernel {r['variant']} {r['heads']}x{r['head_dim']} {r['precision']}"
            out.append(check(res, r, "parity", case, r.get("reason") or r.get("violations") or "", status, False))
    return out
