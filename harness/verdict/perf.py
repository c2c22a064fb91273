"""The performance-regression gate, per GPU: the newest run of a sweep against the oldest of the same
sweep (same variants and cells, same number of GPUs) on the same GPU. A point that regressed fails
(class ``regression``); a drop only a noisy point's spread excuses fails as ``inconclusive``
("cannot judge: too noisy"), never a silent pass. The first run of a sweep on a GPU is its
baseline: one pass check that says so, with nothing compared. A workload run end to end (``gfqual
bench --workload``) has no baseline to regress against yet: it counts as measured when every run
it timed reported (its crashes are the reliability gate's), and ``gfqual compare`` sets two of them
side by side."""

from __future__ import annotations

from collections import defaultdict

from harness.perf.gate import GateError, compare
from harness.verdict.checks import Check, check, source
from harness.verdict.gpus import result_gpu


def _sweep_key(r: dict) -> tuple:
    sweep = r["config"]["sweep"]
    return (
        result_gpu(r),
        sweep["name"],
        r["config"].get("world_size", 1),
        tuple(sweep.get("variants", ())),
        sweep.get("cells_from"),
    )


def perf_checks(results: list[dict]) -> list[Check]:
    groups = defaultdict(list)  # like with like: the same sweep of the same variants and cells on the same GPUs
    for r in results:
        if r["kind"] == "perf" and isinstance(r["config"].get("sweep"), dict):
            groups[_sweep_key(r)].append(r)
    out = [_workload_measured(r) for r in results if r["kind"] == "perf" and _workloads(r)]
    for (_gpu, name, gpus, *_rest), runs in groups.items():
        runs.sort(key=lambda r: r["created"])
        base, run = runs[0], runs[-1]
        try:
            rows = compare(base, run) if len(runs) > 1 else []
        except GateError:
            rows = []
        if not rows:
            measured = sum(p.get("record") == "point" and p.get("status") == "reported" for p in base["records"])
            detail = f"baseline: the first run of {name} here ({measured} points); no earlier run to compare with"
            out.append(check(base, {}, "perf", f"{name} baseline", detail, "pass", False))
            continue
        for row in rows:
            shape = f"{row['variant']} {row['backend']} {row['precision']} {row['layout']} B={row['batch']}"
            case = f"{name}{f' x{gpus} GPUs' if gpus > 1 else ''}: {shape} x {row['seq_len']}"
            detail = (
                f"{row['baseline_cells_per_s']:.4g} -> {row['cells_per_s']:.4g} cells/s (x{row['ratio']:.2f}, "
                f"allowed -{row['allowed_slowdown']:.0%}) against the baseline of {base['created']}"
            )
            status = "fail" if row["regressed"] or row["inconclusive"] else "pass"
            c = check(run, row, "perf", case, detail, status, False)
            c.also = [source(base)]
            if row["inconclusive"]:
                c.klass, c.detail = "inconclusive", f"cannot judge: too noisy; {detail}"
            elif row["regressed"]:
                c.klass = "regression"
            out.append(c)
    return out


def _workloads(result: dict) -> list[dict]:
    return [w for w in result["records"] if w.get("record") in ("workload", "run")]


def _workload_measured(result: dict) -> Check:
    runs = _workloads(result)
    reported = sum(w.get("status") == "reported" for w in runs)
    names = ", ".join(sorted({str(w["workload"]) for w in runs}))
    detail = f"{reported} of {len(runs)} runs measured; no baseline: workloads are compared by gfqual compare"
    status = "pass" if reported else "error"
    return check(result, {}, "perf", f"workload {names} {source(result)}", detail, status, False)
