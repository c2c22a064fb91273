"""Reports, rendered from results files alone.

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

from harness.cli.common import check_output
from models.errors import UsageError

# What each report command writes into its --out folder (glob patterns): a user's file of one of
# these names is never replaced without --overwrite.
WRITES = {
    "report": ("report.html", "report.md", "verdict.json", "*.png"),
    "report-parity": ("parity.md", "parity-*.png"),
    "report-downstream": ("downstream.md", "downstream-*.png"),
    "report-perf": ("*.png",),
}


def _check_out(args, command: str) -> None:
    check_output(args.out, "report-folder", args.overwrite, replaces=WRITES[command])


def _render_kind(kind: str, folder: str, render, out: str, hint: str = "") -> int:
    """One kind's results under ``folder`` through one report renderer."""
    from harness.results import read_results

    results = read_results(folder, kind=kind)
    if not results:
        raise UsageError(f"no {kind} results under {folder}{hint}")
    print(f"wrote {render(results, out)}")
    return 0


def cmd_report_parity(args) -> int:
    from reports.parity import render_parity_report

    _check_out(args, "report-parity")
    return _render_kind("parity", args.results, render_parity_report, args.out)


def cmd_report_downstream(args) -> int:
    from reports.downstream import render_downstream_report

    _check_out(args, "report-downstream")
    return _render_kind("downstream", args.results, render_downstream_report, args.out, " (run gfqual eval first)")


def cmd_report_perf(args) -> int:
    from reports.perf_figures import render_perf_plots

    _check_out(args, "report-perf")
    return _render_kind("perf", args.results, render_perf_plots, args.out, " (run gfqual bench first)")


def cmd_report(args) -> int:
    """The report and verdict.json; exit 0 only when the verdict is PASS (no flag needed for a clean
    run: completeness is judged against the plan's scope, or the GPUs present, never every GPU)."""
    from harness.results import read_results
    from harness.verdict import exit_code
    from harness.verdict.waivers import load_waivers
    from reports.qualification import render_report

    _check_out(args, "report")
    waivers = load_waivers(args.waivers) if args.waivers else None
    results = sorted((r for folder in args.results for r in read_results(folder)), key=lambda r: r["created"])
    if not results:
        raise UsageError(f"no results files under {', '.join(args.results)}")
    plan = _report_plan(args.plan, results) if args.plan else None  # else a qualification file's, or ad hoc
    verdict = render_report(results, args.out, plan=plan, waivers=waivers)
    failing = sum(not f["waived"] for f in verdict["failures"])
    per_gpu = "; ".join(f"{gpu} {v['verdict']}" for gpu, v in verdict["gpus"].items())
    print(
        f"wrote {args.out}/report.html, report.md and verdict.json from {len(results)} results files: "
        f"{verdict['overall']} ({per_gpu}; {failing} failures, {len(verdict['failures']) - failing} waived)"
    )
    return exit_code(verdict)


def _report_plan(spec: str, results: list[dict]) -> dict:
    """A plan to judge results against; its "local" GPU is the one GPU class the results hold."""
    from harness.qualify.plan import load_plan, resolve_plan
    from harness.verdict.gpus import gpu_class

    plan = load_plan(spec)
    if "local" not in plan["gpus"]:
        return plan
    present = sorted({gpu_class(r["env"].get("gpu_name")) for r in results if r["kind"] != "qualification"})
    if len(present) != 1:
        raise UsageError(
            f"--plan {spec} qualifies the 'local' GPU, and these results hold {', '.join(present) or 'none'}: "
            "give a plan file whose gpus name the GPU classes"
        )
    return resolve_plan(plan, present[0])


def cmd_regenerate_reports(args) -> int:
    from reports.regenerate import regenerate

    check_output(args.root, "report-folder", overwrite=True, option="--root")  # regenerates by design
    for folder in regenerate(args.root):
        print(f"wrote {folder}")
    return 0


OVERWRITE_REPORT = "replace the report files already in --out (else they are refused)"


def register(sub, fmt: dict) -> None:
    p = sub.add_parser("report", help="hardware qualification report (HTML + markdown) from results files", **fmt)
    p.add_argument("--results", required=True, nargs="+", help="folders of results files (searched recursively)")
    p.add_argument("--out", required=True, help="report folder: report.html, report.md, verdict.json")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_REPORT)
    p.add_argument(
        "--waivers",
        help="JSON file of known failures signed off (gpu, gate, case, reason, owner, expires): a waived "
        "failure is shown and counted apart; an expired waiver fails (harness/verdict/VERDICT.md)",
    )
    p.add_argument(
        "--plan",
        help="judge completeness against this plan's scope (a shipped plan or JSON file); default: its "
        "qualification file's plan, else the GPUs present",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("regenerate-reports", help="re-render every committed report and plot from results/", **fmt)
    p.add_argument("--root", default=".", help="repository root to write them under")
    p.set_defaults(func=cmd_regenerate_reports)

    p = sub.add_parser("report-downstream", help="render the downstream report (markdown + plots) from results", **fmt)
    p.add_argument("--results", required=True, help="folder of results files")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_REPORT)
    p.set_defaults(func=cmd_report_downstream)

    p = sub.add_parser(
        "report-perf",
        help="draw the perf plots (throughput and memory vs batch, FP8 speed-up, "
        "energy per cell, layouts) from results",
        **fmt,
    )
    p.add_argument("--results", required=True, help="folder of results files")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_REPORT)
    p.set_defaults(func=cmd_report_perf)

    p = sub.add_parser("report-parity", help="render the parity report (markdown + plots) from results", **fmt)
    p.add_argument("--results", required=True, help="folder of results files")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_REPORT)
    p.set_defaults(func=cmd_report_parity)
