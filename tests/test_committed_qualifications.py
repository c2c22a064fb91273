"""A committed qualification (qualifications/<name>/, made by gfqual qualify) is what its own results
judge to today: its verdict.json is re-derived from its results files, so neither can be edited alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.results import read_results
from harness.verdict import judge

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p.parent for p in (REPO / "qualifications").glob("*/verdict.json"))


def _essence(verdict: dict) -> dict:
    """What a verdict says (overall, each GPU's gates, every failure), not when or by what it was rendered."""
    gpus = verdict["gpus"]
    return {
        "overall": verdict["overall"],
        "plan": verdict["plan"]["name"],
        "gpus": {g: (v["verdict"], {k: s["status"] for k, s in v["gates"].items()}) for g, v in gpus.items()},
        "failures": sorted((f["gpu"], f["gate"], f["case"], f["class"]) for f in verdict["failures"]),
    }


def test_there_is_a_committed_qualification():
    assert FOLDERS, "qualifications/ holds no qualification folder"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_a_committed_qualification_is_what_its_results_judge_to(folder):
    committed = json.loads((folder / "verdict.json").read_text())
    assert _essence(judge(read_results(folder / "results"))) == _essence(committed)


def test_the_cpu_qualification_passes_every_gate_of_its_plan():
    verdict = json.loads((REPO / "qualifications" / "cpu" / "verdict.json").read_text())
    assert verdict["overall"] == "PASS" and verdict["exit_code"] == 0
    plan_gates = set(verdict["plan"]["scope"]["gates"])
    gates = verdict["gpus"]["CPU"]["gates"]
    assert {g for g, s in gates.items() if s["status"] == "pass"} == plan_gates


@pytest.mark.parametrize(
    "name, machine, verdict",
    [("cpu", "on 2 cores", ""), ("h200-smoke", "on one H200", ", PASS"), ("h200-standard", "on one H200", ", FAIL")],
)
def test_the_readme_quotes_each_qualifications_wall_time_and_verdict(name, machine, verdict):
    folder = REPO / "qualifications" / name
    qual = json.loads((folder / "results" / "qualification.json").read_text())
    assert f"{json.loads((folder / 'verdict.json').read_text())['overall']}".startswith(verdict[2:])
    row = f"| {round(qual['config']['steps_wall_s'])} s of steps {machine}{verdict}"
    assert row in (REPO / "README.md").read_text()


def test_the_gpu_plans_ran_within_their_targets():
    """The plans' promises (smoke within 5 min, standard within 20, install and TE's first import
    excluded): each committed GPU qualification's steps, plus the estimate of any step that did not
    finish, within the target."""
    for name, target_s in (("h200-smoke", 300), ("h200-standard", 1200)):
        qual = json.loads((REPO / "qualifications" / name / "results" / "qualification.json").read_text())
        finished = {r["step"] for r in qual["records"] if r["status"] in ("reported", "skipped")}
        unfinished = [s["estimate_s"] for s in qual["config"]["plan"]["steps"] if s["name"] not in finished]
        assert qual["config"]["steps_wall_s"] + sum(unfinished) <= target_s, (name, unfinished)
