"""What the verdict is judged against: the plan's scope, whether every step of the plan ran and
left its outputs, whether every input comes from the qualification's commit, and what the verdict
does not cover.

The scope is the plan's (given, or recorded by ``gfqual qualify`` in its ``qualification`` file);
without a plan it is ad hoc: the GPUs present in the results, every gate. A GPU no plan names and
no result comes from (an A100, a GB200) is out of scope, listed in ``not_covered``, and never makes
a verdict incomplete.
"""

from __future__ import annotations

from harness.precision import PRECISIONS
from harness.verdict.gpus import COLUMN_ORDER, column_order, result_gpu
from models.registry import VARIANTS

GATES = ("parity", "embeddings", "training", "reliability", "perf", "downstream")
KIND_GATE = {"parity": "parity", "perf": "perf", "downstream": "downstream"}  # a file's gate when no step names it


def qualification_file(results: list[dict]) -> dict | None:
    """The newest ``qualification`` file (``gfqual qualify``'s record of its plan and steps), if any."""
    quals = [r for r in results if r["kind"] == "qualification"]
    return max(quals, key=lambda r: r["created"]) if quals else None


def scope(results: list[dict], plan: dict | None) -> dict:
    """{"name", "source", "scope": {gpus, variants, precisions, gates, steps}} of the verdict."""
    qual = qualification_file(results)
    source = plan.get("source", "plan given") if plan else None
    if plan is None and qual is not None:
        plan, source = qual["config"]["plan"], qual.get("_source", {}).get("file", "qualification file")
    present = column_order({result_gpu(r) for r in results if r["kind"] != "qualification"})
    if plan is None:
        return {
            "name": None,
            "source": "ad hoc: the GPUs in the results, every gate",
            "scope": {"gpus": present, "variants": list(VARIANTS), "precisions": [], "gates": list(GATES), "steps": []},
        }
    local = [result_gpu(qual)] if qual is not None else present
    gpus = [g for name in plan.get("gpus", ["local"]) for g in (local if name == "local" else [name])]
    return {
        "name": plan.get("name"),
        "source": source,
        "scope": {
            "gpus": column_order(set(gpus)),
            "variants": list(plan.get("variants", VARIANTS)),
            "precisions": list(plan.get("precisions", [])),
            "gates": [g for g in GATES if g in plan.get("gates", GATES)],
            "steps": [dict(s) for s in plan.get("steps", [])],
        },
    }


def _present(output: str, inputs: list[dict]) -> bool:
    """An output a step declared (a path relative to the qualification folder or its results/) is among the inputs."""
    name = output.strip().lstrip("./")
    return any(i["file"] == name or i["file"].endswith("/" + name) for i in inputs)


def plan_failures(results: list[dict], the_scope: dict, inputs: list[dict]) -> list[dict]:
    """Failures of the plan itself: each step that did not report (``missing``: never ran, skipped,
    or its outputs are absent; ``error``: it crashed), and each input from another commit than the
    qualification file (``provenance``)."""
    steps = the_scope["scope"]["steps"]
    qual = qualification_file(results)
    if not steps:
        return []
    gpus = [result_gpu(qual)] if qual is not None else the_scope["scope"]["gpus"]
    ran = {r["step"]: r for r in (qual["records"] if qual else []) if r.get("record") == "plan_step"}
    out = []
    for step in steps:
        rec = ran.get(step["name"])
        absent = [o for o in step.get("outputs", []) if not _present(o, inputs)]
        if rec is not None and rec.get("status") == "reported" and not absent:
            continue
        if rec is None:
            cls, detail = "missing", "the plan's step never ran (no plan_step record)"
        elif rec.get("status") == "error":
            cls, detail = "error", f"the step crashed (exit {rec.get('rc')}): {rec.get('reason') or ''}".strip()
        elif rec.get("status") != "reported":
            cls, detail = "missing", f"the step was {rec.get('status')}: {rec.get('reason')}"
        else:
            cls, detail = "missing", f"the step reported, but its outputs are absent: {', '.join(absent)}"
        for gpu in gpus:
            out.append(
                {
                    "gpu": gpu,
                    "gate": step.get("gate"),
                    "case": f"plan step {step['name']}",
                    "class": cls,
                    "detail": detail,
                    "repro": rec.get("command") if rec else None,
                    "files": [qual.get("_source", {}).get("file", "(in memory)")] if qual else [],
                }
            )
    if qual is not None:
        commit = qual["env"].get("git_commit")
        for r in results:
            other = r["env"].get("git_commit")
            if r is not qual and other != commit:
                name = r.get("_source", {}).get("file", "(in memory)")
                gate = next((s.get("gate") for s in steps for o in s.get("outputs", []) if name.endswith(o)), None)
                out.append(
                    {
                        "gpu": result_gpu(r),
                        "gate": gate or KIND_GATE.get(r["kind"]),
                        "case": f"input {name}",
                        "class": "provenance",
                        "detail": f"measured at commit {str(other)[:8]}, the qualification at {str(commit)[:8]}",
                        "repro": None,
                        "files": [name],
                    }
                )
    return out


def not_covered(results: list[dict], the_scope: dict, settled: list, ran_steps: set[str]) -> list[str]:
    """What a reader might assume the verdict covers and it does not, from the plan against the results."""
    s = the_scope["scope"]
    measured = [r for r in results if r["kind"] != "qualification"]
    present = {result_gpu(r) for r in measured}
    gaps = [
        f"{g}: out of scope (no plan names it, no results)" for g in COLUMN_ORDER if g not in {*s["gpus"], *present}
    ]
    parity = [c for c in settled if c.gate == "parity" and c.record.get("record") == "verdict"]
    training = {c.gpu for c in settled if c.gate == "training"}
    for gpu in column_order(set(s["gpus"]) | present - {"CPU"}):
        checked = {c.record["variant"] for c in parity if c.gpu == gpu}
        if absent := [v for v in s["variants"] if v not in checked]:
            gaps.append(f"{gpu}: no parity for {', '.join(absent)}")
        if gpu not in training:
            gaps.append(f"{gpu}: training parity")
        if not any(result_gpu(r) == gpu for r in measured if r["kind"] == "downstream"):
            gaps.append(f"{gpu}: downstream tasks")
        if not any(
            result_gpu(r) == gpu and w.get("record") in ("workload", "run")
            for r in measured
            if r["kind"] == "perf"
            for w in r["records"]
        ):
            gaps.append(f"{gpu}: end-to-end workloads")
    gaps += [f"plan step {st['name']} ({st.get('gate')}): not run" for st in s["steps"] if st["name"] not in ran_steps]
    if not any((rec.get("world_size") or 1) > 1 for r in measured for rec in r["records"]):
        gaps.append("multi-GPU: no run on more than one GPU (scaling, data-parallel embedding)")
    if not any(str(c.record.get("cells", "")).startswith("real") for c in parity):
        gaps.append("real cells in parity: every parity case ran on synthetic cells")
    skipped: dict[str, set] = {}
    for r in measured:
        for rec in r["records"]:
            if rec.get("record") == "verdict" and rec.get("precision") in PRECISIONS:
                skipped.setdefault(rec["precision"], set()).add(
                    rec.get("reason") if rec["status"] == "skipped" else None
                )
    gaps += [
        f"{p}: skipped wherever asked ({sorted(reasons)[0]})"
        for p, reasons in sorted(skipped.items())
        if None not in reasons
    ]
    if not any(r["weights"].get("source") == "checkpoint" for r in measured):
        gaps.append(
            "Geneformer's trained weights: every result here uses seeded random weights of the "
            "published configs, so no number here carries learned biology"
        )
    return gaps
