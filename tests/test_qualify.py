"""gfqual qualify: plans as data, refused when malformed; the runner records every step (a crash
is an error row, never the end of the run), resumes without re-running a finished step, stops
cleanly on Ctrl-C; the cpu plan end to end to results, a report and verdict.json."""

from __future__ import annotations

import json

import pytest

from harness.capability import probe
from harness.cli import main
from harness.qualify.plan import load_plan, shipped_plans, validate_plan
from harness.qualify.runner import INTERRUPTED, Runner
from harness.results import gates, read_result
from models.errors import UsageError

CPU_ONLY = pytest.mark.skipif(probe().cuda, reason="the CPU plan and the refusal of GPU plans on a CPU")


def _plan(tmp_path, steps, **extra) -> str:
    plan = {
        "name": "t",
        "description": "test plan",
        "device": "cpu",
        "gpus": ["local"],
        "variants": ["V1-10M"],
        "precisions": ["fp32"],
        "gates": ["parity", "perf"],
        "steps": steps,
        **extra,
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return str(path)


SYNTH = {
    "name": "synth",
    "gate": "perf",
    "args": ["synth", "--cells", "8", "--genes", "200", "--out", "{data}/cells.h5ad"],
    "estimate_s": 5,
    "outputs": [],
    "data": ["data/cells.h5ad"],
}
TOKENIZE = {
    "name": "tokenize",
    "gate": "perf",
    "args": ["tokenize", "--input", "{data}/cells.h5ad", "--variant", "V1-10M", "--dicts", "synthetic"]
    + ["--out", "{data}/tok"],
    "estimate_s": 5,
    "outputs": [],
    "data": ["data/tok"],
}


def test_shipped_plans_are_valid_and_estimate_within_their_targets():
    assert shipped_plans() == ["cpu", "full", "smoke", "standard"]
    total = {name: sum(s["estimate_s"] for s in load_plan(name)["steps"]) for name in shipped_plans()}
    assert total["smoke"] <= 300 and total["standard"] <= 1200 and total["cpu"] <= 120
    standard = load_plan("standard")
    assert set(standard["variants"]) == {"V1-10M", "V2-104M", "V2-104M_CLcancer", "V2-316M"}
    fed = {s["gate"] for s in standard["steps"]} | {"embeddings" for s in standard["steps"] if s["args"][0] == "run"}
    assert fed == set(standard["gates"])  # every gate it claims has a step (gfqual run checks embeddings too)
    assert load_plan("smoke")["source"] == "smoke"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update(gate="speed"), "gate 'speed' is not one of the plan's gates"),
        (lambda s: s.update(args=["fly", "--out", "{results}/x.json"]), "unknown subcommand 'fly'"),
        (lambda s: s.pop("estimate_s"), "missing estimate_s"),
        (lambda s: s.update(args=["run", "--variants", "V9", "--out", "{results}/x.json"]), "invalid choice"),
        (lambda s: s.update(outputs=["other.json"]), "output 'other.json' must be a .json results file"),
        (lambda s: s.update(args=["run", "--out", "{where}/x.json"]), "unknown placeholder {where}"),
        (lambda s: s.update(args=["report", "--results", "r", "--out", "{results}/x.json"]), "unknown subcommand"),
    ],
)
def test_a_malformed_plan_is_refused_naming_the_problem(tmp_path, capsys, change, message):
    step = {"name": "p", "gate": "parity", "args": ["run", "--out", "{results}/x.json"], "estimate_s": 1}
    step["outputs"] = ["x.json"]
    change(step)
    path = _plan(tmp_path, [step])
    assert main(["qualify", "--plan", path, "--out", str(tmp_path / "q"), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_plan_keys_and_gates_are_checked():
    plan = json.loads(json.dumps(load_plan("cpu")))
    plan["gates"] = ["parity", "speed"]
    with pytest.raises(UsageError, match="unknown gates"):
        validate_plan(plan)
    plan = json.loads(json.dumps(load_plan("cpu")))
    del plan["steps"][0]["args"]
    with pytest.raises(UsageError, match="missing args"):
        validate_plan(plan)
    assert main(["qualify", "--plan", "nosuch", "--out", "x", "--dry-run"]) == 2


def test_a_plan_step_gates_only_when_it_errored():
    base = {"record": "plan_step", "variant": "-", "backend": "-", "precision": "-"}
    assert gates({**base, "status": "error"}) is True
    assert gates({**base, "status": "reported"}) is False
    assert gates({**base, "status": "skipped"}) is False


@CPU_ONLY
def test_a_gpu_plan_is_refused_on_a_cpu_with_its_estimate(tmp_path, capsys):
    assert main(["qualify", "--plan", "standard", "--out", str(tmp_path / "q")]) == 3
    err = capsys.readouterr().err
    minutes = sum(s["estimate_s"] for s in load_plan("standard")["steps"]) / 60
    assert f"qualifies a GPU (about {minutes:.0f} min there)" in err and "--force" in err
    assert not (tmp_path / "q" / "results" / "qualification.json").exists()


@CPU_ONLY
def test_a_crashing_step_is_an_error_row_and_the_run_goes_on(tmp_path, monkeypatch):
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "sitecustomize.py").write_text(
        "import os, signal, sys\nif 'tokenize' in sys.argv:\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(crash))
    after = {**SYNTH, "name": "synth-after", "args": [*SYNTH["args"][:-1], "{data}/more.h5ad"]}
    after["data"] = ["data/more.h5ad"]
    path = _plan(tmp_path, [SYNTH, TOKENIZE, after])
    out = tmp_path / "q"
    rc = main(["qualify", "--plan", path, "--out", str(out)])
    qual = read_result(out / "results" / "qualification.json")
    steps = {r["step"]: r for r in qual["records"]}
    assert steps["tokenize"]["status"] == "error" and steps["tokenize"]["gating"] is True
    assert "killed by signal SIGSEGV" in steps["tokenize"]["reason"]
    assert steps["synth"]["status"] == steps["synth-after"]["status"] == "reported"
    assert (out / "data" / "more.h5ad").exists()  # the step after the crash ran
    assert qual["config"]["plan"]["gpus"] == ["CPU"]  # "local" resolved before it is recorded
    assert (out / "verdict.json").exists() and rc in (0, 1)


@CPU_ONLY
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from harness.qualify.plan import validate_plan as check
    from harness.qualify.runner import probe_environment

    plan = json.loads(open(_plan(tmp_path, [SYNTH, TOKENIZE])).read())
    check(plan)
    runner = Runner(plan, tmp_path / "q", probe_environment())
    real = Runner.run_step

    def interrupted(self, step):
        if step["name"] == "tokenize":
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(Runner, "run_step", interrupted)
    assert runner.run() == INTERRUPTED
    qual = read_result(tmp_path / "q" / "results" / "qualification.json")
    assert [r["step"] for r in qual["records"]] == ["synth"]
    assert qual["config"]["sessions"][-1]["interrupted"] is True
    assert "Resume with the same command" in capsys.readouterr().out
    with pytest.raises(UsageError, match="holds a qualification of plan 't', not 'other'"):
        Runner({**plan, "name": "other"}, tmp_path / "q", {})  # its results would mix with another plan's


@CPU_ONLY
def test_the_cpu_plan_end_to_end_then_resumed(tmp_path, capsys):
    out = tmp_path / "qual"
    rc = main(["qualify", "--plan", "cpu", "--out", str(out)])
    verdict = json.loads((out / "verdict.json").read_text())
    assert (verdict["overall"], rc) == ("PASS", 0), verdict["failures"]  # a clean run passes with no flag
    assert set(verdict["gpus"]) == {"CPU"} and verdict["plan"]["name"] == "cpu"
    assert (out / "report.md").exists() and (out / "report.html").exists()
    qual = read_result(out / "results" / "qualification.json")
    plan = load_plan("cpu")
    assert [r["step"] for r in qual["records"]] == [s["name"] for s in plan["steps"]]
    assert all(r["status"] == "reported" and r["wall_s"] > 0 for r in qual["records"]), qual["records"]
    for step in plan["steps"]:
        for o in step["outputs"]:
            assert read_result(out / "results" / o)["env"]["git_commit"] == qual["env"]["git_commit"]
    assert qual["config"]["steps_wall_s"] == pytest.approx(sum(r["wall_s"] for r in qual["records"]), abs=0.5)
    first = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.json") if p.name != "qualification.json"}
    capsys.readouterr()

    assert main(["qualify", "--plan", "cpu", "--out", str(out)]) == rc  # resumed: nothing to run
    printed = capsys.readouterr().out
    assert printed.count("finished in an earlier run") == len(plan["steps"])
    again = read_result(out / "results" / "qualification.json")
    assert [r["started"] for r in again["records"]] == [r["started"] for r in qual["records"]]
    assert {p: p.stat().st_mtime_ns for p in first} == first
    assert len(again["config"]["sessions"]) == 2 and again["config"]["sessions"][-1]["steps_run"] == 0


def test_a_step_identity_holds_its_command_the_code_the_environment_and_the_data_it_reads():
    from harness.qualify.runner import identities

    other = {**SYNTH, "name": "other", "args": [*SYNTH["args"][:-1], "{data}/other.h5ad"], "data": ["data/other.h5ad"]}
    plan = {"steps": [SYNTH, TOKENIZE, other]}
    env = {"gpu_name": "NVIDIA H200", "te": "2.20.2"}
    base = identities(plan, "abc", env)
    remade = identities(
        {"steps": [{**SYNTH, "args": [*SYNTH["args"][:2], "9", *SYNTH["args"][3:]]}, TOKENIZE, other]}, "abc", env
    )
    assert remade["synth"] != base["synth"] and remade["tokenize"] != base["tokenize"]  # new cells: new tokens
    assert remade["other"] == base["other"]
    assert identities(plan, "abd", env)["other"] != base["other"]  # other code
    assert identities(plan, "abc", {**env, "te": "2.21"})["other"] != base["other"]  # other TE


def test_report_plan_resolves_local_to_the_one_gpu_of_the_results():
    from harness.cli.reports import _report_plan

    h200 = {"kind": "parity", "env": {"gpu_name": "NVIDIA H200"}}
    h100 = {"kind": "perf", "env": {"gpu_name": "NVIDIA H100 80GB HBM3"}}
    assert _report_plan("standard", [h200])["gpus"] == ["H200"]
    with pytest.raises(UsageError, match="these results hold H100, H200"):
        _report_plan("standard", [h100, h200])


def test_the_python_api_runs_a_plan_as_the_command_does(tmp_path):
    from harness import api

    plan = _plan(tmp_path, [SYNTH, TOKENIZE])
    verdict = api.qualify(plan, tmp_path / "q")
    assert verdict == json.loads((tmp_path / "q" / "verdict.json").read_text())
    assert verdict["plan"]["name"] == "t" and verdict["overall"] != "PASS"  # its gates measured nothing
    assert (tmp_path / "q" / "report.html").exists()
    with pytest.raises(UsageError):
        api.qualify(tmp_path / "no-such-plan.json", tmp_path / "q2")
