"""Golden tests of the verdict (harness/verdict/): faults planted in copies of the committed results
(never results/ itself) and in a clean fixture of every gate. Each fault must give FAIL, exit 1
where the command runs, and name its case on the right GPU in verdict.json's failures; the clean
fixture must give PASS and exit 0 with no flag."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.results import make_result, read_results, write_result
from harness.verdict import GATES, judge

REPO = Path(__file__).resolve().parents[1]
H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
SEED0 = "random weights, seed 0"


def _env(gpu=H200, commit="c1", cc="9.0", memory=140.4):
    return {
        "gpu_name": gpu,
        "compute_capability": cc,
        "gpu_memory_gib": memory,
        "driver": "580",
        "cuda": "13.0",
        "torch": "2.11",
        "te": "2.20.2",
        "transformers": "5.17",
        "cudnn": "91900",
        "te_cudnn": "9.14.0",
        "git_commit": commit,
        "git_dirty": False,
    }


CASE = {"variant": "V1-10M", "backend": "te", "precision": "bf16"}
WEIGHTS = {"source": "random-init", "seed": 0}


def _parity(status="pass", env=None):
    records = [
        {**CASE, "record": "verdict", "status": status, "worst_stage": "logits", "worst_rel_l2": 1e-3},
        {**CASE, "record": "embedding", "status": "pass", "n_cells": 4, "rel_l2": 1e-3, "cos_dist": 1e-6},
    ]
    return make_result("parity", records, WEIGHTS, {}, env=env or _env())


def _training(env=None):
    common = {**CASE, "status": "pass", "violations": ""}
    records = [
        {**common, "record": "backward_verdict", "bound": 0.1, "failed": 0, "worst_stage": "x", "worst_rel_l2": 0.01},
        {
            **common,
            "record": "trajectory_verdict",
            "steps": 4,
            "max_step_loss_rel_diff": 1e-3,
            "final_weights_rel_l2": 1e-3,
            "loss_limit": 1e-2,
            "weights_limit": 1e-2,
        },
    ]
    return make_result("parity", records, WEIGHTS, {}, env=env or _env())


def _perf(cells_per_s=100.0, spread=0.01, env=None, created=None):
    point = {
        **CASE,
        "record": "point",
        "status": "reported",
        "layout": "full",
        "batch": 8,
        "seq_len": 2048,
        "cells_per_s": cells_per_s,
        "spread": spread,
        "repeats": 10,
    }
    result = make_result("perf", [point], WEIGHTS, {"sweep": {"name": "gpu-baseline"}}, env=env or _env())
    result["created"] = created or result["created"]
    return result


def _downstream(env=None):
    metrics = {f"{m}_{k}": 0.0 for m in ("roc_auc", "accuracy", "macro_f1") for k in ("diff", "ci_low", "ci_high")}
    agreement = {
        **CASE,
        **metrics,
        "record": "agreement",
        "task": "dosage",
        "reference": "hf-sdpa@bf16",
        "judged": True,
        "status": "pass",
        "label_agreement": 1.0,
        "bound": 0.02,
        "worst_abs_diff": 0.0,
    }
    return make_result("downstream", [agreement], WEIGHTS, {"task": "dosage"}, env=env or _env())


def _clean(folder: Path, env=None) -> Path:
    """Every gate measured and passing on one GPU: the fixture a clean run is."""
    for name, result in {
        "parity": _parity(env=env),
        "training": _training(env=env),
        "perf": _perf(env=env),
        "downstream": _downstream(env=env),
    }.items():
        write_result(result, folder / f"{name}.json")
    return folder


def _report(tmp_path, *folders, extra=()) -> tuple[int, dict]:
    out = tmp_path / "out"
    rc = main(["report", "--results", *map(str, folders), "--out", str(out), "--overwrite", *extra])
    return rc, json.loads((out / "verdict.json").read_text())


def _failures(verdict, **where) -> list[dict]:
    return [f for f in verdict["failures"] if all(f[k] == v for k, v in where.items())]


@pytest.fixture(scope="module")
def committed():
    """The committed results, read once, and their verdict before any fault is planted."""
    results = sorted((r for g in ("h100", "h200") for r in read_results(REPO / "results" / g)), key=_created)
    return results, judge(results)


def _created(r):
    return r["created"]


def _copy(tmp_path) -> Path:
    """A copy of results/h100 and results/h200 to plant a fault in."""
    for gpu in ("h100", "h200"):
        shutil.copytree(REPO / "results" / gpu, tmp_path / "results" / gpu)
    return tmp_path / "results"


def _judge_copy(folder: Path, **kwargs) -> dict:
    return judge(sorted((r for g in ("h100", "h200") for r in read_results(folder / g)), key=_created), **kwargs)


def _edit(path: Path, change) -> None:
    """Rewrite one results file of the copy with ``change(result)`` applied to its raw JSON."""
    result = json.loads(path.read_text())
    change(result)
    path.write_text(json.dumps(result))


# --- a clean run --------------------------------------------------------------------------------


def test_a_clean_run_passes_with_exit_0_and_no_flag(tmp_path):
    rc, verdict = _report(tmp_path, _clean(tmp_path / "clean"))
    assert rc == 0 and verdict["overall"] == "PASS" and verdict["exit_code"] == 0
    h200 = verdict["gpus"]["H200"]
    assert h200["verdict"] == "PASS" and {g: c["status"] for g, c in h200["gates"].items()} == dict.fromkeys(
        GATES, "pass"
    )
    assert verdict["failures"] == [] and verdict["superseded"] == []
    assert "A100: out of scope (no plan names it, no results)" in verdict["not_covered"]
    assert {i["file"] for i in verdict["inputs"]} == {
        f"clean/{n}.json" for n in ("parity", "training", "perf", "downstream")
    }
    assert h200["identity"] == {"name": H200, "compute_capability": "9.0", "memory_gib": 140.4, "flag": None}
    assert h200["stack"]["te"] == "2.20.2" and h200["stack"]["te_cudnn"] == "9.14.0"


def test_the_committed_results_fail_on_both_gpus_for_what_failed_there(committed):
    _results, verdict = committed
    assert verdict["overall"] == "FAIL"
    assert {g: v["verdict"] for g, v in verdict["gpus"].items()} == {"H100": "FAIL", "H200": "FAIL"}
    assert not verdict["superseded"]


# --- faults planted in a copy of results/ -------------------------------------------------------


def test_an_embedding_that_crashed_fails_its_gpu(tmp_path, committed):
    folder = _copy(tmp_path)
    crash = "AcceleratorError: CUDA error: an illegal memory access was encountered"

    def plant(result):
        embedding = next(r for r in result["records"] if r.get("record") == "embedding")
        embedding.update(status="error", reason=crash, rel_l2=None)

    _edit(folder / "h200" / "parity-matrix-h200.json", plant)
    rc, verdict = _report(tmp_path, folder / "h100", folder / "h200")
    assert rc == 1 and verdict["overall"] == "FAIL" and verdict["gpus"]["H200"]["verdict"] == "FAIL"
    assert committed[1]["gpus"]["H200"]["gates"]["embeddings"]["status"] == "pass"
    assert verdict["gpus"]["H200"]["gates"]["embeddings"]["status"] == "error"
    (failure,) = _failures(verdict, gpu="H200", gate="embeddings")
    assert failure["class"] == "crash" and crash in failure["detail"]
    assert failure["case"].startswith("embedding ") and failure["files"] == ["h200/parity-matrix-h200.json"]


def test_a_downstream_comparison_that_errored_fails(tmp_path, committed):
    folder = _copy(tmp_path)

    def plant(result):
        agreement = next(r for r in result["records"] if r.get("record") == "agreement" and r.get("judged"))
        agreement.update(status="error", reason="RuntimeError: the TE run died")

    _edit(folder / "h100" / "downstream-dosage-V1-10M.json", plant)
    verdict = _judge_copy(folder)
    errors = _failures(verdict, gpu="H100", gate="downstream", **{"class": "error"})
    assert len(errors) == 1 and errors[0]["case"].startswith("dosage (celltypist_sample_559cells")
    assert "V1-10M te@fp32 vs hf-sdpa@fp32" in errors[0]["case"]
    assert "the TE run died" in errors[0]["detail"]
    assert verdict["gpus"]["H100"]["gates"]["downstream"]["status"] == "error"
    assert not _failures(committed[1], gpu="H100", gate="downstream", **{"class": "error"})


def test_a_perf_regression_on_an_h200_point_fails_the_h200(tmp_path, committed):
    folder = _copy(tmp_path)
    base = json.loads((folder / "h200" / "perf-gpu-baseline-h200.json").read_text())
    quiet = next(p for p in base["records"] if p.get("status") in ("ok", "reported") and (p.get("spread") or 1) < 0.03)
    rerun = json.loads(json.dumps(base))
    rerun["created"] = "2026-12-02T00:00:00+00:00"
    for p in rerun["records"]:
        if p == quiet:
            p["cells_per_s"] *= 0.7
    (folder / "h200" / "perf-gpu-baseline-h200-rerun.json").write_text(json.dumps(rerun))
    verdict = _judge_copy(folder)
    assert committed[1]["gpus"]["H200"]["gates"]["perf"]["status"] == "pass"
    assert verdict["gpus"]["H200"]["gates"]["perf"]["status"] == "fail"
    assert verdict["gpus"]["H100"]["gates"]["perf"]["status"] == "pass"
    (failure,) = _failures(verdict, gate="perf")
    assert failure["gpu"] == "H200" and failure["class"] == "regression" and "x0.70" in failure["detail"]
    shape = f"{quiet['variant']} {quiet['backend']} {quiet['precision']} {quiet['layout']} B={quiet['batch']}"
    assert failure["case"] == f"gpu-baseline: {shape} x {quiet['seq_len']}"
    assert failure["files"] == ["h200/perf-gpu-baseline-h200-rerun.json", "h200/perf-gpu-baseline-h200.json"]


def test_a_stored_gating_false_never_hides_a_failure(tmp_path, committed):
    folder = _copy(tmp_path)
    planted = {}

    def plant(result):
        verdict = next(r for r in result["records"] if r.get("record") == "verdict" and r["precision"] == "fp32")
        verdict.update(status="fail", gating=False)
        planted.update(verdict)

    _edit(folder / "h200" / "parity-matrix-h200.json", plant)
    verdict = _judge_copy(folder)
    case = f"{planted['variant']} {planted['backend']} fp32 · {SEED0}"
    assert committed[1]["gpus"]["H200"]["gates"]["parity"]["status"] == "pass"
    assert verdict["gpus"]["H200"]["gates"]["parity"]["status"] == "fail"
    assert case in verdict["gpus"]["H200"]["gates"]["parity"]["failing"]
    assert _failures(verdict, gpu="H200", gate="parity", case=case)


def test_a_file_relabelled_to_another_gpu_is_flagged(tmp_path):
    folder = _copy(tmp_path)

    def relabel(result):
        result["env"]["gpu_name"] = "NVIDIA A100-SXM4-80GB"  # compute capability 9.0 kept

    _edit(folder / "h200" / "parity-attention-kernel-h200.json", relabel)
    verdict = _judge_copy(folder)
    a100 = verdict["gpus"]["A100"]
    assert a100["verdict"] == "FAIL" and "compute capability 8.0" in a100["identity"]["flag"]
    (failure,) = _failures(verdict, gpu="A100", **{"class": "provenance"})
    assert failure["files"] == ["h200/parity-attention-kernel-h200.json"]
    assert not any(n.startswith("A100: out of scope") for n in verdict["not_covered"])


# --- faults planted in the clean fixture ---------------------------------------------------------


def test_the_committed_downstream_failure_fails_the_h100(tmp_path):
    clean = _clean(tmp_path / "clean", env=_env(H100, memory=79.1))
    shutil.copy(REPO / "results" / "h100" / "downstream-cardiomyopathy-V2-104M-h100-bc3454b.json", clean)
    rc, verdict = _report(tmp_path, clean)
    assert rc == 1 and verdict["overall"] == "FAIL" and verdict["gpus"]["H100"]["verdict"] == "FAIL"
    (failure,) = verdict["failures"]
    assert failure["gpu"] == "H100" and failure["gate"] == "downstream" and failure["class"] == "tolerance"
    assert failure["case"] == (
        f"cardiomyopathy (synthetic, 40 marker genes per class) V2-104M te@fp8-current vs hf-sdpa@bf16 · {SEED0}"
    )
    assert "0.0889 against a bound of 0.02" in failure["detail"] and "TOLERANCES.md" in failure["detail"]


def test_a_rerun_of_the_same_seed_that_passes_supersedes_the_failure_visibly(tmp_path):
    clean = _clean(tmp_path / "clean")
    failed = _parity(status="fail")
    failed["created"] = "2026-01-01T00:00:00+00:00"
    write_result(failed, clean / "parity-first.json")
    rc, verdict = _report(tmp_path, clean)
    assert rc == 0 and verdict["overall"] == "PASS"
    assert verdict["superseded"] == [
        {
            "gpu": "H200",
            "gate": "parity",
            "case": f"V1-10M te bf16 · {SEED0}",
            "older": "clean/parity-first.json",
            "newer": "clean/parity.json",
            "older_status": "fail",
            "newer_status": "pass",
        }
    ]
    assert "superseded: GPU" in (tmp_path / "out" / "report.md").read_text()
    other_seed = _parity(status="pass")  # a pass of other weights supersedes nothing
    other_seed["weights"] = {"source": "random-init", "seed": 1}
    other_seed["created"] = "2099-01-01T00:00:00+00:00"
    verdict = judge([failed, other_seed])
    assert verdict["overall"] == "FAIL" and not verdict["superseded"]


def test_a_drop_too_noisy_to_judge_is_inconclusive_not_a_pass(tmp_path):
    clean = _clean(tmp_path / "clean")
    write_result(_perf(cells_per_s=60.0, spread=0.42, created="2099-01-01T00:00:00+00:00"), clean / "perf-2.json")
    rc, verdict = _report(tmp_path, clean)
    assert rc == 1 and verdict["overall"] == "FAIL"
    (failure,) = verdict["failures"]
    assert (failure["gpu"], failure["gate"], failure["class"]) == ("H200", "perf", "inconclusive")
    assert failure["detail"].startswith("cannot judge: too noisy") and failure["case"].startswith("gpu-baseline:")


def test_a_training_band_the_reference_learned_nothing_in_is_inconclusive_not_a_pass(tmp_path):
    clean = _clean(tmp_path / "clean")
    band = {
        **CASE, "record": "band_verdict", "objective": "classify", "steps": 200, "seeds": 3, "status": "fail",
        "inconclusive": True,
        "reference": "hf-sdpa@bf16, 3 seeds", "violations": "cannot judge: the reference learned only the class "
        "frequencies (held-out accuracy 0.333; the most common class is 0.344 of the held-out cells)",
    }  # fmt: skip
    write_result(make_result("parity", [band], WEIGHTS, {}, env=_env()), clean / "band.json")
    rc, verdict = _report(tmp_path, clean)
    assert rc == 1 and verdict["overall"] == "FAIL"
    (failure,) = verdict["failures"]
    assert (failure["gpu"], failure["gate"], failure["class"]) == ("H200", "training", "inconclusive")
    assert failure["case"].startswith("classify held-out band V1-10M te bf16")
    assert failure["detail"].startswith("cannot judge: the reference learned only the class frequencies")


def test_a_training_band_failed_where_the_reference_spikes_is_instability(tmp_path):
    clean = _clean(tmp_path / "clean")
    band = {
        **CASE, "record": "band_verdict", "objective": "mlm", "steps": 1000, "seeds": 3, "status": "fail",
        "inconclusive": False, "unstable": True, "lr": 1e-3, "reference": "hf-sdpa@bf16, 3 seeds",
        "violations": "held-out loss 8.3625 at step 400 outside the reference seeds' [7.9510, 8.3563]; the reference "
        "itself is unstable here: its seed 2's held-out loss rose 0.60 nats above its best by step 700",
    }  # fmt: skip
    write_result(make_result("parity", [band], WEIGHTS, {}, env=_env()), clean / "band.json")
    rc, verdict = _report(tmp_path, clean)
    assert rc == 1 and verdict["overall"] == "FAIL"  # an unstable band is still no pass
    (failure,) = verdict["failures"]
    assert (failure["gate"], failure["class"]) == ("training", "instability")
    assert failure["case"].startswith("mlm held-out band V1-10M te bf16 lr 0.001")


def test_a_drop_within_a_quiet_points_noise_passes():
    base = _perf(created="2026-01-01T00:00:00+00:00")
    verdict = judge([base, _perf(cells_per_s=97.0, created="2026-02-01T00:00:00+00:00")])
    assert verdict["gpus"]["H200"]["gates"]["perf"]["status"] == "pass"


# --- the plan: completeness and provenance ----------------------------------------------------------


def _plan(steps=("parity", "training", "perf", "downstream")):
    gate = {"parity": "parity", "training": "training", "perf": "perf", "downstream": "downstream"}
    return {
        "name": "test",
        "description": "every gate on one GPU",
        "gpus": ["local"],
        "variants": ["V1-10M"],
        "precisions": ["bf16"],
        "gates": list(GATES),
        "steps": [{"name": s, "gate": gate[s], "args": [], "estimate_s": 1, "outputs": [f"{s}.json"]} for s in steps],
    }


def _qualification(plan, statuses: dict, commit="c1"):
    """gfqual qualify's record of a plan and its steps (the qualify helper's file kind), in memory."""
    steps = [
        {
            "record": "plan_step",
            "variant": "-",
            "backend": "-",
            "precision": "-",
            "step": s["name"],
            "gate": s["gate"],
            "status": status,
            "rc": {"reported": 0, "error": 4, "skipped": 3}[status],
            "wall_s": 1.0,
            "estimate_s": 1.0,
            "outputs": ",".join(s["outputs"]),
            "reason": None if status == "reported" else "exit 4: Segmentation fault",
            "command": f"gfqual {s['name']}",
        }
        for s in plan["steps"]
        if (status := statuses.get(s["name"], "reported")) != "absent"
    ]
    return {
        "schema_version": 2,
        "kind": "qualification",
        "created": "2099-01-01T00:00:00+00:00",
        "env": _env(commit=commit),
        "weights": {},
        "config": {"plan": plan},
        "records": steps,
        "_source": {"file": "qual/results/qualification.json"},
    }


def _clean_read(tmp_path, env=None) -> list[dict]:
    return read_results(_clean(tmp_path / "clean", env=env))


def test_a_plan_run_to_the_end_passes_and_names_its_scope(tmp_path):
    plan = _plan()
    verdict = judge([*_clean_read(tmp_path), _qualification(plan, {})])
    assert verdict["overall"] == "PASS" and verdict["plan"]["name"] == "test"
    assert verdict["plan"]["source"] == "qual/results/qualification.json"
    assert verdict["plan"]["scope"]["gpus"] == ["H200"] and verdict["plan"]["scope"]["steps"] == plan["steps"]


def test_a_missing_plan_step_fails(tmp_path):
    plan = _plan()
    verdict = judge([*_clean_read(tmp_path), _qualification(plan, {"training": "absent"})])
    assert verdict["overall"] == "FAIL" and verdict["gpus"]["H200"]["verdict"] == "FAIL"
    (failure,) = verdict["failures"]
    assert (failure["gpu"], failure["gate"], failure["case"], failure["class"]) == (
        "H200",
        "training",
        "plan step training",
        "missing",
    )
    assert "plan step training (training): not run" in verdict["not_covered"]
    # a step that reported but whose output is gone is missing too
    results = [r for r in _clean_read(tmp_path / "again") if not r["_source"]["file"].endswith("perf.json")]
    verdict = judge([*results, _qualification(plan, {})])
    (failure,) = verdict["failures"]
    assert failure["case"] == "plan step perf" and "outputs are absent: perf.json" in failure["detail"]


def test_a_crashed_plan_step_fails(tmp_path):
    plan = _plan()
    verdict = judge([*_clean_read(tmp_path), _qualification(plan, {"downstream": "error"})])
    assert verdict["overall"] == "FAIL"
    (failure,) = verdict["failures"]
    assert (failure["gpu"], failure["gate"], failure["case"], failure["class"]) == (
        "H200",
        "downstream",
        "plan step downstream",
        "error",
    )
    assert "exit 4" in failure["detail"] and failure["repro"] == "gfqual downstream"


def test_a_results_file_from_another_commit_fails_under_a_plan(tmp_path):
    results = _clean_read(tmp_path)
    stray = _perf(env=_env(commit="c0ffee00"))
    stray["_source"] = {"file": "clean/perf-old.json"}
    verdict = judge([*results, stray, _qualification(_plan(), {})])
    assert verdict["overall"] == "FAIL"
    (failure,) = _failures(verdict, **{"class": "provenance"})
    assert failure["gpu"] == "H200" and failure["case"] == "input clean/perf-old.json"
    assert "commit c0ffee00" in failure["detail"]
    assert judge([*results, stray])["overall"] == "PASS"  # without a plan no commit is expected


def test_a_plan_names_the_gpus_in_scope(tmp_path):
    plan = {**_plan(), "gpus": ["local", "A100"]}
    verdict = judge([*_clean_read(tmp_path), _qualification(plan, {})])
    assert verdict["gpus"]["A100"]["verdict"] == "INCOMPLETE"  # named, and nothing measured there
    assert verdict["overall"] == "INCOMPLETE" and "A100: training parity" in verdict["not_covered"]
    assert not any(n.startswith("A100: out of scope") for n in verdict["not_covered"])
    narrow = {**_plan(), "gates": ["parity"]}
    verdict = judge([*_clean_read(tmp_path / "narrow"), _qualification(narrow, {})])
    assert verdict["gpus"]["H200"]["gates"]["training"]["status"] == "out_of_scope"


# --- waivers --------------------------------------------------------------------------------------


def _waiver(case, expires):
    return {
        "gpu": "H100",
        "gate": "downstream",
        "case": case,
        "reason": "synthetic task",
        "owner": "qa",
        "expires": expires,
    }


def test_waivers_sign_off_a_failure_until_they_expire(tmp_path):
    clean = _clean(tmp_path / "clean", env=_env(H100, memory=79.1))
    shutil.copy(REPO / "results" / "h100" / "downstream-cardiomyopathy-V2-104M-h100-bc3454b.json", clean)
    case = f"cardiomyopathy (synthetic, 40 marker genes per class) V2-104M te@fp8-current vs hf-sdpa@bf16 · {SEED0}"
    valid = tmp_path / "waivers.json"
    valid.write_text(json.dumps({"waivers": [_waiver(case, "2999-01-01")]}))
    rc, verdict = _report(tmp_path, clean, extra=["--waivers", str(valid)])
    assert rc == 0 and verdict["overall"] == "PASS"
    (failure,) = verdict["failures"]  # still listed, counted apart
    assert failure["waived"] and failure["waiver"]["owner"] == "qa"
    assert verdict["gpus"]["H100"]["gates"]["downstream"]["status"] == "waived"
    assert "waived: GPU" in (tmp_path / "out" / "report.md").read_text()
    expired = tmp_path / "expired.json"
    expired.write_text(json.dumps({"waivers": [_waiver(case, "2020-01-01")]}))
    rc, verdict = _report(tmp_path, clean, extra=["--waivers", str(expired)])
    assert rc == 1 and verdict["overall"] == "FAIL"
    assert [f["class"] for f in verdict["failures"]] == ["tolerance", "waiver-expired"]
    assert not any(f["waived"] for f in verdict["failures"])
    results = read_results(clean)
    assert judge(results, waivers=[_waiver(case, "2030-06-01")], today=dt.date(2030, 6, 2))["overall"] == "FAIL"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "cannot read it"),
        ('{"waivers": {}}', "a list of waivers"),
        ('{"waivers": [{"gate": "parity", "case": "x", "reason": "r", "owner": "o"}]}', "lacks expires"),
        ('[{"gate": "parity", "case": "x", "reason": "r", "owner": "o", "expires": "soon"}]', "is not a date"),
    ],
)
def test_a_malformed_waivers_file_exits_2_naming_the_problem(tmp_path, capsys, content, problem):
    clean = _clean(tmp_path / "clean")
    (tmp_path / "w.json").write_text(content)
    out = tmp_path / "out"
    assert main(["report", "--results", str(clean), "--out", str(out), "--waivers", str(tmp_path / "w.json")]) == 2
    assert problem in capsys.readouterr().err and not out.exists()


# --- GPU identity ------------------------------------------------------------------------------------


def test_a_gpu_whose_memory_does_not_match_its_name_is_flagged_and_an_unknown_gpu_has_its_own_column():
    wrong_memory = _parity(env=_env(H100, memory=140.4))
    unknown = _parity(env=_env("NVIDIA RTX PRO 6000 Blackwell", cc="12.0", memory=95.0))
    verdict = judge([wrong_memory, unknown])
    assert "79.1 or 93.1 GiB" in verdict["gpus"]["H100"]["identity"]["flag"]
    assert _failures(verdict, gpu="H100", **{"class": "provenance"})
    other = verdict["gpus"]["NVIDIA RTX PRO 6000 Blackwell"]
    assert other["identity"]["flag"] is None and other["identity"]["compute_capability"] == "12.0"
    grace = judge([_parity(env=_env("NVIDIA GH200 480GB", memory=94.5))])  # a name holding "H200" is not an H200
    assert list(grace["gpus"]) == ["GH200"] and grace["gpus"]["GH200"]["identity"]["flag"] is None


def test_the_gating_flag_stored_in_a_file_is_never_read():
    trusted = _parity(status="pass")
    trusted["records"][0]["gating"] = False  # a pass that says it does not count still counts
    assert judge([trusted])["gpus"]["H200"]["gates"]["parity"]["counted"] == 1
    beta = _parity(status="fail")
    beta["records"][0].update(precision="fp8-delayed-dpa", gating=True)  # TE beta never gates, whatever it says
    cell = judge([beta])["gpus"]["H200"]["gates"]["parity"]
    assert cell["status"] == "not_run" and "1 TE beta (FP8 attention) failures shown, not gating" in cell["detail"]
