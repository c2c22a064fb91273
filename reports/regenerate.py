"""Every rendered artefact under version control, from the committed results, by one command
(``gfqual regenerate-reports``): what a test re-renders to prove no committed report is stale."""

from __future__ import annotations

from pathlib import Path

from harness.results import read_results

REPO = Path(__file__).resolve().parents[1]
RENDERED = "reports/rendered"  # every generated artefact under version control, and nothing else


def artefacts(repo: Path = REPO) -> list[tuple[str, list[Path], str]]:
    """(renderer, results folders, output folder relative to the repository) for each artefact."""
    results = repo / "results"
    return [
        ("qualification", [results / "h100", results / "h200"], f"{RENDERED}/qualification"),
        ("parity", [results / "h100"], f"{RENDERED}/parity-h100"),
        ("downstream", [results / "h100"], f"{RENDERED}/downstream"),
        ("perf", [results / "h100"], f"{RENDERED}/perf-h100"),
        ("perf", [results / "h200"], f"{RENDERED}/perf-h200"),
        ("compare", [results / "h100", results / "h200"], f"{RENDERED}/compare-h100-h200"),
    ]


def regenerate(out_root: Path, repo: Path = REPO) -> list[Path]:
    """Render every artefact into ``out_root`` (the repository itself to refresh them)."""
    from harness.qualify.compare import compare_folders, write_comparison
    from reports.downstream import render_downstream_report
    from reports.parity import render_parity_report
    from reports.perf_figures import render_perf_plots
    from reports.qualification import render_report

    written = []
    for renderer, folders, out in artefacts(repo):
        target = Path(out_root) / out
        if renderer == "compare":
            a, b = folders
            comparison = compare_folders(a, b, labels=[f.relative_to(repo).as_posix() for f in folders])
            write_comparison(comparison, target)
        elif renderer == "qualification":
            results = sorted((r for f in folders for r in read_results(f)), key=lambda r: r["created"])
            render_report(results, target)
        else:
            kind = {"parity": "parity", "downstream": "downstream", "perf": "perf"}[renderer]
            results = [r for f in folders for r in read_results(f, kind=kind)]
            {"parity": render_parity_report, "downstream": render_downstream_report, "perf": render_perf_plots}[
                renderer
            ](results, target)
        written.append(target)
    return written
