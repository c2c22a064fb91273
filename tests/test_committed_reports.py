"""No stale report can land: re-rendering every committed artefact from the committed results gives
the committed text, and the same set of files (figures by name: PNG bytes depend on font builds).
verdict.json's ``rendered_by`` names the commit that rendered it, which changes with every commit:
it is compared without it."""

from __future__ import annotations

import json

from reports.regenerate import REPO, artefacts, regenerate


def test_committed_reports_are_what_the_committed_results_render(tmp_path):
    regenerate(tmp_path)
    for _renderer, _folders, out in artefacts():
        fresh, committed = tmp_path / out, REPO / out
        made = sorted(p.name for p in fresh.iterdir())
        kept = sorted(p.name for p in committed.iterdir() if p.suffix in (".md", ".png", ".html", ".json"))
        assert made == kept, f"{out}: stale or missing files: {sorted(set(made) ^ set(kept))}"
        for name in made:
            if name.endswith(".json"):
                mine, theirs = (json.loads((f / name).read_text()) for f in (fresh, committed))
                assert {**mine, "rendered_by": None} == {**theirs, "rendered_by": None}, f"{out}/{name} is stale"
            elif name.endswith(".md"):
                assert (fresh / name).read_text() == (committed / name).read_text(), f"{out}/{name} is stale"


def test_generated_artefacts_live_in_one_place():
    """Every rendered file is under reports/rendered/; results/ holds results, reports/ holds code."""
    stray = [
        p.relative_to(REPO).as_posix()
        for folder in ("results", "reports")
        for p in (REPO / folder).rglob("*")
        if p.suffix in (".png", ".html", ".md") and "rendered" not in p.relative_to(REPO).parts
    ]
    assert not stray, f"rendered files outside reports/rendered/: {stray}"
    assert {out for _r, _f, out in artefacts()} == {
        f"reports/rendered/{name}"
        for name in (
            "qualification",
            "parity-h100",
            "downstream",
            "perf-h100",
            "perf-h200",
            "compare-h100-h200",
        )
    }
