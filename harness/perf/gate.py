"""Performance regression gate: a run against a stored baseline of the same GPU model.

Points are matched on (variant, backend, precision, layout, batch, seq_len, world_size). A point regresses
when its throughput falls below the baseline's by more than the allowed slowdown *and* by more
than the measurements' own noise (the larger of the two runs' spread, (max − min) / median), so a
noisy machine cannot fail the gate on noise alone, and a quiet one cannot hide a real slowdown
behind a loose threshold. A drop beyond the allowed slowdown that only a noisy point's spread
(beyond NOISE_LIMIT) excuses is ``inconclusive``: the gate cannot judge it, and says so rather
than pass it.
"""

from __future__ import annotations

from harness.perf.noise import NOISE_LIMIT
from models.errors import GfqualError

KEY = ("variant", "backend", "precision", "layout", "batch", "seq_len", "world_size")


def _key(r: dict) -> tuple:
    return tuple(r.get(k, 1 if k == "world_size" else None) for k in KEY)  # rows before torchrun: one GPU


class GateError(GfqualError, ValueError):
    pass


def compare(baseline: dict, run: dict, max_slowdown: float = 0.05) -> list[dict]:
    gpu_b, gpu_r = (r["env"].get("gpu_name") or "a CPU (no GPU)" for r in (baseline, run))
    if gpu_b != gpu_r:
        raise GateError(f"baseline is from {gpu_b}, this run from {gpu_r}: compare like with like")
    ok = lambda r: r.get("record") == "point" and r.get("status") == "reported"  # noqa: E731
    base = {_key(r): r for r in baseline["records"] if ok(r)}
    rows = []
    for r in filter(ok, run["records"]):
        key = _key(r)
        if key not in base:
            continue
        b = base[key]
        ratio = r["cells_per_s"] / b["cells_per_s"]
        allowed = max(max_slowdown, b.get("spread") or 0.0, r.get("spread") or 0.0)
        regressed = ratio < 1 - allowed
        rows.append(
            {
                **dict(zip(KEY, key)),
                "baseline_cells_per_s": b["cells_per_s"],
                "cells_per_s": r["cells_per_s"],
                "ratio": ratio,
                "allowed_slowdown": allowed,
                "regressed": regressed,
                "inconclusive": not regressed and ratio < 1 - max_slowdown and allowed > NOISE_LIMIT,
            }
        )
    if not rows:
        raise GateError("no point of the run matches a point of the baseline")
    return rows
