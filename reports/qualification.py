"""The hardware qualification report: one self-contained HTML page and a markdown twin, rendered
from results files alone (never by running a model).

The report is built once as a list of sections holding tables and figures; the HTML and the
markdown are two renderings of the same sections, so they cannot disagree. Figures are PNGs:
embedded as base64 in the HTML (no network, no CDN), written beside the markdown.

This module only composes: each section and its gate come from the module of its kind
(reports/parity.py, training.py, perf.py, downstream.py); here live the runs-and-environment section, the
per-GPU verdict, what the verdict does not cover, and verdict.json.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from harness.results import gate_status
from models.registry import VARIANTS
from reports.document import (
    GPU_COLUMNS,
    Section,
    Table,
    _fmt,
    _records,
    result_gpu,
    to_html,
    to_markdown,
)
from reports.downstream import downstream_section
from reports.parity import embedding_section, newest_records, parity_section
from reports.perf import kernel_crashes, perf_gate, perf_section, reliability_gate
from reports.training import newest_training_verdicts, training_section

ENV_KEYS = ("gpu_name", "driver", "cuda", "torch", "te", "transformers", "git_commit")


# --- sections -------------------------------------------------------------------------------


def environment_section(results: list[dict]) -> Section:
    rows = []
    for r in results:
        w = r["weights"]
        weights = w.get("source") or ", ".join(f"{k}: {v.get('source')}" for k, v in w.items() if isinstance(v, dict))
        rows.append([r["created"], r["kind"], *(_fmt(r["env"].get(k)) for k in ENV_KEYS), weights])
    text = []
    commits = {r["env"].get("git_commit") for r in results}
    te_versions = {r["env"].get("te") for r in results if r["env"].get("te")}
    if len(commits) > 1:
        text.append(
            f"⚠ Mixed code versions: results come from {len(commits)} commits "
            f"({', '.join(sorted(c[:8] for c in commits if c))}); compare rows from different commits with care."
        )
    if len(te_versions) > 1:
        text.append(f"⚠ Mixed TransformerEngine versions: {', '.join(sorted(te_versions))}.")
    if any(r["env"].get("git_dirty") for r in results):
        text.append("⚠ Some results were measured from a working tree with uncommitted changes.")
    if any(r["weights"].get("source") == "random-init" for r in results):
        text.append(
            "Weights: seeded random initialisation of the published configs unless a row says otherwise; "
            "numbers qualify kernels and conversion, not the trained model's biology."
        )
    return Section("Runs and environment", text, [Table(["created", "kind", *ENV_KEYS, "weights"], rows)])


def per_gpu_verdicts(results: list[dict]) -> dict[str, str]:
    """Each GPU's own verdict from its gating parity, training parity and embedding records (newest
    per what was tested) and its kernel crashes: fail if any failed, pass if some passed, else not measured."""
    statuses: defaultdict[str, list[str | None]] = defaultdict(list)
    for gpu, _what in kernel_crashes(results):
        statuses[gpu].append("fail")
    for (gpu, *_key), r in newest_records(results, "verdict").items():
        statuses[gpu].append(gate_status(r))
    for gpu, r in newest_training_verdicts(results):
        statuses[gpu].append(gate_status(r))
    for gpu, _res, e in _records(results, "parity", "embedding"):
        statuses[gpu].append(gate_status(e))
    gpus = {result_gpu(r) for r in results}
    return {
        gpu: "fail" if "fail" in statuses[gpu] else ("pass" if "pass" in statuses[gpu] else "not measured")
        for gpu in sorted(gpus)
    }


def not_covered(results: list[dict]) -> list[str]:
    """What a reader might assume the verdict covers and it does not, found from what is missing."""
    gpus = {result_gpu(r) for r in results} - {"CPU"}
    missing = [f"{g}: no results" for g in GPU_COLUMNS if g not in gpus]
    verdicts = newest_records(results, "verdict")
    trained = {gpu for gpu, _v in newest_training_verdicts(results)}
    for gpu in sorted(gpus):
        checked = {k[2] for k in verdicts if k[0] == gpu}
        if absent := [v for v in VARIANTS if v not in checked]:
            missing.append(f"{gpu}: no parity for {', '.join(absent)}")
        if gpu not in trained:
            missing.append(f"{gpu}: training parity")
        if not any(result_gpu(r) == gpu for r in results if r["kind"] == "downstream"):
            missing.append(f"{gpu}: downstream tasks")
        if not any(
            result_gpu(r) == gpu and w["record"] in ("workload", "run")
            for r in results
            if r["kind"] == "perf"
            for w in r["records"]
        ):
            missing.append(f"{gpu}: end-to-end workloads")
    by_precision = defaultdict(set)
    for key, r in verdicts.items():
        by_precision[key[4]].add(r["status"])
    missing += [
        f"{p}: skipped wherever asked ({next(r['reason'] for k, r in verdicts.items() if k[4] == p)})"
        for p, seen in sorted(by_precision.items())
        if seen == {"skipped"}
    ]
    if not any(r["weights"].get("source") == "checkpoint" for r in results):
        missing.append(
            "Geneformer's trained weights: every result here uses seeded random weights of the "
            "published configs, so no number here carries learned biology"
        )
    return missing


def _failed_and_open(gates: list[dict]) -> tuple[list[str], list[str]]:
    """The gates that failed, and those not measured or not evaluated."""
    return (
        [g["gate"] for g in gates if g["status"] == "fail"],
        [g["gate"] for g in gates if g["status"] in ("not measured", "not evaluated")],
    )


def verdict_of(gates: list[dict], results: list[dict]) -> dict:
    """The machine-readable verdict (``verdict.json``): overall, per GPU, per gate, not covered."""
    failed, open_ = _failed_and_open(gates)
    gaps = not_covered(results)
    overall = "fail" if failed else ("incomplete" if open_ or gaps else "pass")
    return {
        "overall": overall,
        "per_gpu": per_gpu_verdicts(results),
        "gates": gates,
        "not_covered": gaps,
        "results_files": len(results),
    }


def verdict_section(verdict: dict) -> Section:
    gates = verdict["gates"]
    overall = {"fail": "FAIL", "incomplete": "PASS (incomplete)", "pass": "PASS"}[verdict["overall"]]
    text = [
        f"**Overall: {overall}**",
        "Per GPU: " + "; ".join(f"{g} {v.upper()}" for g, v in verdict["per_gpu"].items()) + ".",
    ]
    failed, open_ = _failed_and_open(gates)
    if failed:
        text.append(f"Failed: {', '.join(failed)}.")
    if open_:
        text.append(f"Not measured or not evaluated: {', '.join(open_)}.")
    if verdict["not_covered"]:
        text.append("Not covered by this verdict: " + "; ".join(verdict["not_covered"]) + ".")
    table = Table(["gate", "verdict", "detail"], [[g["gate"], g["status"].upper(), g["detail"]] for g in gates])
    return Section("Verdict", text, [table])


def build_report(results: list[dict]) -> tuple[list[Section], dict]:
    parity, parity_gate = parity_section(results)
    embeddings, embedding_gate = embedding_section(results)
    training, training_gate = training_section(results)
    downstream, downstream_gate = downstream_section(results)
    verdict = verdict_of(
        [parity_gate, embedding_gate, training_gate, reliability_gate(results), perf_gate(results), downstream_gate],
        results,
    )
    sections = [
        verdict_section(verdict),
        environment_section(results),
        parity,
        embeddings,
        training,
        perf_section(results),
        downstream,
    ]
    return sections, verdict


def render_report(results: list[dict], out_dir: str | Path) -> tuple[Path, Path, dict]:
    """report.html, report.md and verdict.json (for CI) into ``out_dir``; returns the verdict."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, verdict = build_report(results)
    md = out_dir / "report.md"
    md.write_text(to_markdown(sections, out_dir))
    page = out_dir / "report.html"
    page.write_text(to_html(sections))
    (out_dir / "verdict.json").write_text(json.dumps(verdict, indent=1) + "\n")
    return page, md, verdict
