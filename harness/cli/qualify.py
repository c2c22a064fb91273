"""Qualification: a plan carried out to a report and verdict.json (qualify), two qualifications
side by side (compare).

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

from harness.outputs import check_output
from models.errors import CannotRunHere


def cmd_qualify(args) -> int:
    from pathlib import Path

    from harness.qualify.plan import load_plan, resolve_plan
    from harness.qualify.runner import INTERRUPTED, Runner, describe, probe_environment
    from harness.results import read_results
    from harness.verdict.gpus import gpu_class

    plan = load_plan(args.plan)
    waivers = _waivers(args.waivers)
    out = Path(args.out)
    resuming = (out / "results" / "qualification.json").is_file()  # its own report is re-rendered
    check_output(args.out, "report-folder", resuming, replaces=("report.html", "report.md", "verdict.json"))
    if args.dry_run:
        print(describe(plan))
        return 0
    env = probe_environment()
    local = gpu_class(env.get("gpu_name"))
    plan = resolve_plan(plan, local)
    runner = Runner(plan, out, env)
    print(describe(plan, runner.done()))
    if plan["device"] == "cuda" and env.get("device") != "cuda" and not args.force:
        raise CannotRunHere(
            f"plan {plan['name']} qualifies a GPU (about {sum(s['estimate_s'] for s in plan['steps']) / 60:.0f} min "
            "there); this machine has no CUDA GPU, where its TE steps are skipped and its GPU sweeps would run "
            "for hours. Run it on the GPU, run --plan cpu here, or pass --force"
        )
    print(f"on {env.get('gpu_name') or 'CPU'} (GPU class {local}), code {runner.code[:12]}; writing {out}/")
    if runner.run() == INTERRUPTED:
        return INTERRUPTED
    return _render(read_results(runner.folder.results), out, plan, waivers)


def _waivers(path: str | None) -> list[dict] | None:
    if path is None:
        return None
    from harness.verdict.waivers import load_waivers

    return load_waivers(path)


def _render(results: list[dict], out, plan: dict | None, waivers: list[dict] | None) -> int:
    """The report and verdict.json into ``out``; the verdict's exit code."""
    from harness.verdict import exit_code
    from reports.qualification import render_report

    verdict = render_report(results, out, plan=plan, waivers=waivers)
    print(
        f"wrote {out}/report.html, report.md and verdict.json from {len(results)} results files: {verdict['overall']}"
    )
    return exit_code(verdict)


def cmd_compare(args) -> int:
    from harness.qualify.compare import compare_folders, write_comparison

    check_output(args.out, "report-folder", args.overwrite, replaces=("comparison.md", "comparison.json"))
    comparison = compare_folders(args.a, args.b)
    md, js = write_comparison(comparison, args.out)
    print(comparison["summary"])
    print(f"wrote {md} and {js}")
    return 1 if comparison["drift"] else 0


def register(sub, fmt: dict) -> None:
    p = sub.add_parser(
        "qualify",
        help="carry out a qualification plan (smoke, standard, full, cpu or a JSON file) to results, "
        "a report and verdict.json; resumable; exits with the verdict's code",
        **fmt,
    )
    p.add_argument("--plan", required=True, help="a shipped plan (cpu, smoke, standard, full) or a plan JSON file")
    p.add_argument(
        "--out", required=True, help="qualification folder: results/, data/, logs/, report and verdict.json (resumed)"
    )
    p.add_argument("--waivers", help="waivers file: known failures signed off, with reason, owner and expiry")
    p.add_argument("--dry-run", action="store_true", help="print the plan's steps and estimates, run nothing")
    p.add_argument("--force", action="store_true", help="run a GPU plan on a machine without a GPU anyway")
    p.set_defaults(func=cmd_qualify)

    p = sub.add_parser(
        "compare",
        help="two qualifications (or folders of results) side by side: versions, parity error ratios, perf "
        "ratios with their noise, verdicts, cross-GPU embedding consistency; exit 1 on drift or regression",
        **fmt,
    )
    p.add_argument("a", help="folder A (a qualification folder, or any folder of results files)")
    p.add_argument("b", help="folder B, compared with A (ratios are B / A)")
    p.add_argument("--out", required=True, help="folder for comparison.md and comparison.json")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison.md / comparison.json there")
    p.set_defaults(func=cmd_compare)
