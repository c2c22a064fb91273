"""The reliability gate: no kernel crash. Every measurement (a perf point, the largest-batch search,
a kernel profile, a workload) counts: one that ran is a pass, one that died on a kernel fault
outside TE beta features is an ``error`` (the gating rule, ``harness.results.gates``). A crash is
keyed by what was measured, so a later clean run of the same point supersedes it, visibly."""

from __future__ import annotations

from harness.verdict.checks import Check, check, counted_status, records

MEASUREMENTS = ("point", "max_batch", "kernel_profile", "workload", "run")
KEY_FIELDS = {  # what identifies one measurement of each kind (max_batch's batch is its answer, not its key)
    "point": ("variant", "backend", "precision", "forward", "layout", "batch", "seq_len", "world_size"),
    "max_batch": ("variant", "backend", "precision", "forward", "seq_len"),
    "kernel_profile": ("variant", "backend", "precision", "forward", "batch", "seq_len"),
    "workload": ("workload", "variant", "backend", "precision", "cells", "world_size"),
    "run": ("workload", "variant", "backend", "precision", "cells", "world_size"),
}


DEFAULTS = {"forward": "mlm", "world_size": 1}  # what a record written before the field existed measured


def measurement_key(r: dict) -> str:
    values = {k: r.get(k, DEFAULTS.get(k)) for k in KEY_FIELDS[r["record"]]}
    return " ".join([r["record"]] + [f"{k}={v}" for k, v in values.items() if v is not None])


def reliability_checks(results: list[dict]) -> list[Check]:
    out = []
    for res, r in records(results, "perf", *MEASUREMENTS):
        status = counted_status(r) or ("pass" if r.get("status") == "reported" else None)
        if status:
            out.append(check(res, r, "reliability", measurement_key(r), r.get("reason") or "", status, False))
    return out
