"""The hardware qualification report: one self-contained HTML page and a markdown twin, rendered
from results files alone (never by running a model).

The report is built once as a list of sections holding tables and figures; the HTML and the
markdown are two renderings of the same sections, so they cannot disagree. Figures are PNGs:
embedded as base64 in the HTML (no network, no CDN), written beside the markdown.

This module only composes and displays: the verdict (verdict.json) is computed once by
harness/verdict/ from the records; each section comes from the module of its kind (reports/parity.py,
training.py, perf.py, downstream.py); here live the runs-and-environment section and the verdict's display.
"""

from __future__ import annotations

from pathlib import Path

from harness.verdict import judge
from reports.document import Section, Table, _fmt, to_html, to_markdown
from reports.downstream import downstream_section
from reports.parity import embedding_section, parity_section
from reports.perf import perf_section
from reports.training import training_section

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


STATUS_TEXT = {"out_of_scope": "OUT OF SCOPE", "not_run": "NOT RUN"}


def _status(status: str) -> str:
    return STATUS_TEXT.get(status, status.upper())


def verdict_section(verdict: dict) -> Section:
    """The verdict as harness/verdict/ computed it, displayed: overall, the per-GPU x gate matrix,
    the failures with their class and reproduction, the waived and the superseded apart, and what
    the verdict does not cover. Nothing here judges."""
    gpus = verdict["gpus"]
    plan = verdict["plan"]
    text = [
        f"**Overall: {verdict['overall']}**",
        "Per GPU: " + "; ".join(f"{g} {v['verdict']}" for g, v in gpus.items()) + ".",
        f"Scope: {plan['name'] or 'no plan'} ({plan['source']}); GPUs {', '.join(plan['scope']['gpus']) or 'none'}; "
        f"gates {', '.join(plan['scope']['gates'])}.",
    ]
    open_ = [f for f in verdict["failures"] if not f["waived"]]
    waived = [f for f in verdict["failures"] if f["waived"]]
    if open_:
        classes = sorted({f["class"] for f in open_})
        text.append(f"{len(open_)} failures ({', '.join(classes)}); {len(waived)} waived, counted apart.")
    flagged = [f"{g}: {v['identity']['flag']}" for g, v in gpus.items() if v["identity"]["flag"]]
    if flagged:
        text.append("⚠ GPU identity flagged: " + "; ".join(flagged) + ".")
    text.append(
        "TE beta features (FP8 attention, *-dpa) are shown in the sections below and counted in each gate's "
        "detail; they never gate. Every input file, its sha256 and commit: verdict.json."
    )
    if verdict["not_covered"]:
        text.append("Not covered by this verdict: " + "; ".join(verdict["not_covered"]) + ".")
    names = list(gpus)
    rows = [["verdict", *(gpus[g]["verdict"] for g in names)]]
    gates = list(next(iter(gpus.values()))["gates"]) if gpus else []
    rows += [
        [gate, *(f"{_status(c['status'])} · {c['detail']}" for c in (gpus[g]["gates"][gate] for g in names))]
        for gate in gates
    ]
    rows.append(["GPU", *(f"{i['name']} (cc {i['compute_capability']})" for i in (gpus[g]["identity"] for g in names))])
    rows += [[k, *(gpus[g]["stack"][k] for g in names)] for k in ("te", "torch", "cuda", "driver")]
    tables = [Table(["gate", *names], rows)]
    if open_:
        tables.append(
            Table(
                ["failure: GPU", "gate", "case", "class", "detail", "reproduce", "files"],
                [
                    [f["gpu"], f["gate"], f["case"], f["class"], f["detail"], f["repro"], ", ".join(f["files"])]
                    for f in open_
                ],
            )
        )
    if waived:
        tables.append(
            Table(
                ["waived: GPU", "gate", "case", "class", "reason", "owner", "expires"],
                [
                    [
                        f["gpu"],
                        f["gate"],
                        f["case"],
                        f["class"],
                        *(f["waiver"][k] for k in ("reason", "owner", "expires")),
                    ]
                    for f in waived
                ],
            )
        )
    if verdict["superseded"]:
        tables.append(
            Table(
                ["superseded: GPU", "gate", "case", "older (status)", "newer (status)"],
                [
                    [
                        s["gpu"],
                        s["gate"],
                        s["case"],
                        f"{s['older']} ({s['older_status']})",
                        f"{s['newer']} ({s['newer_status']})",
                    ]
                    for s in verdict["superseded"]
                ],
            )
        )
    return Section("Verdict", text, tables)


def build_report(
    results: list[dict], plan: dict | None = None, waivers: list[dict] | None = None, today=None
) -> tuple[list[Section], dict]:
    verdict = judge(results, plan=plan, waivers=waivers, today=today)
    measured = [r for r in results if r["kind"] in ("parity", "perf", "downstream")]
    sections = [
        verdict_section(verdict),
        environment_section(measured),
        parity_section(measured),
        embedding_section(measured),
        training_section(measured),
        perf_section(measured),
        downstream_section(measured),
    ]
    return sections, verdict


def render_report(
    results: list[dict], out_dir: str | Path, plan: dict | None = None, waivers: list[dict] | None = None, today=None
) -> dict:
    """report.html, report.md and verdict.json (for CI) into ``out_dir``; returns the verdict."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, verdict = build_report(results, plan, waivers, today)
    (out_dir / "report.md").write_text(to_markdown(sections, out_dir))
    (out_dir / "report.html").write_text(to_html(sections))
    (out_dir / "verdict.json").write_text(json.dumps(verdict, indent=1) + "\n")
    return verdict
