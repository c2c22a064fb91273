"""The verdict, assembled once: every family's checks through the one status rule, settled (newest
per thing tested), failures classified and matched against waivers, GPU identity and the plan's
completeness added, then one per-GPU x gate matrix from which each GPU's verdict and the overall
verdict are both read, so they cannot disagree. The result is verdict.json (VERDICT.md)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from harness.environment import git_state
from harness.precision import PRECISIONS
from harness.verdict.checks import FAILING, Check, settle, source
from harness.verdict.classify import classify
from harness.verdict.downstream import downstream_checks
from harness.verdict.embeddings import embedding_checks
from harness.verdict.gpus import column_order, identity, result_gpu
from harness.verdict.parity import parity_checks
from harness.verdict.perf import perf_checks
from harness.verdict.plan import GATES, KIND_GATE, not_covered, plan_failures, qualification_file, scope
from harness.verdict.reliability import reliability_checks
from harness.verdict.training import training_checks
from harness.verdict.waivers import expired, waiver_for

SCHEMA = "gfqual-verdict/1"
GATE_STATUSES = ("pass", "fail", "error", "not_run", "out_of_scope", "waived")
VERDICTS = ("PASS", "FAIL", "INCOMPLETE")
FAMILIES = (parity_checks, embedding_checks, training_checks, reliability_checks, perf_checks, downstream_checks)
STACK = ("driver", "cuda", "torch", "te", "transformers", "cudnn", "te_cudnn")


def _sha256(result: dict) -> str:
    """The file's sha256 as read, or (a result held in memory) that of its canonical JSON."""
    if "sha256" in result.get("_source", {}):
        return result["_source"]["sha256"]
    body = {k: v for k, v in result.items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def inputs_of(results: list[dict]) -> list[dict]:
    return [
        {
            "file": source(r),
            "sha256": _sha256(r),
            "kind": r["kind"],
            "commit": r["env"].get("git_commit"),
            "dirty": r["env"].get("git_dirty"),
            "created": r["created"],
        }
        for r in results
    ]


def _one(values: set) -> str | None:
    values = {str(v) for v in values if v is not None}
    return ", ".join(sorted(values)) or None


def _failure(c: Check) -> dict:
    return {
        "gpu": c.gpu,
        "gate": c.gate,
        "case": c.case,
        **{k: v for k, v in classify(c).items() if k != "known"},
        "files": [c.file, *c.also],
    }


def _identity_failures(results: list[dict]) -> list[dict]:
    out = []
    for r in results:
        flag = identity(r["env"])["flag"]
        if flag and r["kind"] != "qualification":
            out.append(
                {
                    "gpu": result_gpu(r),
                    "gate": KIND_GATE.get(r["kind"]),
                    "case": f"GPU identity of {source(r)}",
                    "class": "provenance",
                    "detail": f"the GPU's name does not match its recorded identity: {flag}",
                    "repro": None,
                    "files": [source(r)],
                }
            )
    return out


def _te_beta_failures(results: list[dict]) -> dict[tuple, int]:
    """(GPU, gate) -> how many TE beta (FP8 attention) checks failed: shown, counted, never gating."""
    counts: dict[tuple, int] = {}
    kinds = {"verdict": "parity", "attention_kernel": "parity", "embedding": "embeddings", "agreement": "downstream"}
    for r in results:
        for rec in r["records"]:
            p = PRECISIONS.get(rec.get("precision"))
            gate = kinds.get(rec.get("record"), "training" if "verdict" in str(rec.get("record")) else None)
            if p is not None and p.experimental and gate and rec.get("status") in FAILING:
                key = (result_gpu(r), gate)
                counts[key] = counts.get(key, 0) + 1
    return counts


def _apply_waivers(failures: list[dict], waivers: list[dict], today: dt.date) -> list[dict]:
    extra = []
    for f in failures:
        w = waiver_for(f, waivers)
        f["waived"], f["waiver"] = False, None
        if w is None:
            continue
        if expired(w, today):
            extra.append(
                {
                    **{k: f[k] for k in ("gpu", "gate", "case", "repro", "files")},
                    "class": "waiver-expired",
                    "detail": f"the waiver of {w['owner']} expired on {w['expires']} ({w['reason']})",
                    "waived": False,
                    "waiver": w,
                }
            )
        else:
            f["waived"], f["waiver"] = True, w
    return failures + extra


def _gate_cell(gate: str, gpu: str, the_scope: dict, checks: list[Check], failures: list[dict], beta: int) -> dict:
    if gate not in the_scope["scope"]["gates"]:
        return {"status": "out_of_scope", "counted": 0, "failing": [], "detail": "not in the plan's gates"}
    mine = [c for c in checks if c.gpu == gpu and c.gate == gate]
    fails = [f for f in failures if f["gpu"] == gpu and f["gate"] == gate]
    open_ = [f for f in fails if not f["waived"]]
    passed = sum(c.status == "pass" for c in mine)
    detail = f"{passed} of {len(mine)} pass" if mine else "nothing measured"
    if open_:
        detail += f"; {len(open_)} failing ({', '.join(sorted({f['class'] for f in open_}))})"
    if waived := len(fails) - len(open_):
        detail += f"; {waived} waived"
    if beta:
        detail += f"; {beta} TE beta (FP8 attention) failures shown, not gating"
    if open_:
        only_missing = all(f["class"] == "missing" for f in open_) and not mine
        errored = {c.case for c in mine if c.status == "error"}
        raised = any(f["case"] in errored or f["class"] in ("error", "crash") for f in open_)
        status = "not_run" if only_missing else ("error" if raised else "fail")
    else:
        status = "waived" if fails else ("pass" if mine else "not_run")
    return {"status": status, "counted": len(mine), "failing": sorted({f["case"] for f in open_}), "detail": detail}


def judge(
    results: list[dict],
    *,
    plan: dict | None = None,
    waivers: list[dict] | None = None,
    today: dt.date | None = None,
) -> dict:
    """The verdict.json document for ``results`` (read by ``harness.results.read_results``)."""
    today = today or dt.date.today()
    the_scope = scope(results, plan)
    measured = [r for r in results if r["kind"] != "qualification"]
    checks, superseded = settle([c for family in FAMILIES for c in family(measured)])
    inputs = inputs_of(results)
    failures = [_failure(c) for c in checks if c.failing]
    failures += _identity_failures(results) + plan_failures(results, the_scope, inputs)
    failures = _apply_waivers(failures, waivers or [], today)
    failures.sort(key=lambda f: (f["gpu"], GATES.index(f["gate"]) if f["gate"] in GATES else len(GATES), f["case"]))
    beta = _te_beta_failures(measured)
    gpus = {}
    for gpu in column_order(set(the_scope["scope"]["gpus"]) | {result_gpu(r) for r in measured}):
        mine = [r for r in measured if result_gpu(r) == gpu]
        cells = {g: _gate_cell(g, gpu, the_scope, checks, failures, beta.get((gpu, g), 0)) for g in GATES}
        failed = any(f["gpu"] == gpu and not f["waived"] for f in failures) or any(
            c["status"] in ("fail", "error") for c in cells.values()
        )
        open_ = any(c["status"] == "not_run" for c in cells.values())
        ids = [identity(r["env"]) for r in sorted(mine, key=lambda r: r["created"])]
        flags = sorted({i["flag"] for i in ids if i["flag"]})
        newest = ids[-1] if ids else {"name": None, "compute_capability": None, "memory_gib": None}
        gpus[gpu] = {
            "verdict": "FAIL" if failed else ("INCOMPLETE" if open_ else "PASS"),
            "identity": {**newest, "flag": "; ".join(flags) or None},
            "gates": cells,
            "stack": {k: _one({r["env"].get(k) for r in mine}) for k in STACK},
        }
    verdicts = {g["verdict"] for g in gpus.values()}
    overall = "FAIL" if "FAIL" in verdicts else ("INCOMPLETE" if "INCOMPLETE" in verdicts or not gpus else "PASS")
    qual = qualification_file(results)
    ran = {r["step"] for r in (qual["records"] if qual else []) if r.get("status") == "reported"}
    return {
        "schema": SCHEMA,
        "overall": overall,
        "exit_code": exit_code({"overall": overall}),
        "plan": the_scope,
        "gpus": gpus,
        "failures": failures,
        "superseded": sorted(superseded, key=lambda s: (s["gpu"], s["gate"], s["case"], s["older"])),
        "not_covered": not_covered(results, the_scope, checks, ran),
        "inputs": inputs,
        "rendered_by": {"commit": (state := git_state())["git_commit"], "dirty": state["git_dirty"]},
    }


def exit_code(verdict: dict) -> int:
    """0 only for PASS; FAIL and INCOMPLETE both exit 1 (CI must not read an incomplete run as a pass)."""
    return 0 if verdict["overall"] == "PASS" else 1
