"""The report's training section, from small fixture results: a failure reaches the verdict and is
never hidden by a newer pass of other weights, each loss curve is drawn in its label's style, and
each training speed-up divides two points of one run."""

from __future__ import annotations

import matplotlib.pyplot as plt

from harness.results import make_result
from reports.document import series_style
from reports.qualification import build_report, render_report
from reports.training import _newest_trajectory_steps, draw_loss_curves

H200 = "NVIDIA H200"
CASE = {"variant": "V1-10M", "backend": "te", "precision": "fp8-delayed", "cells": 4, "seq_len": 256}
NAMES = {"reference": "hf-eager@fp64", "peer": "hf-eager@bf16 (mixed precision)"}


def _training(trajectory="pass", backward="pass", seed=0, created=None, gpu=H200, objective=None):
    reference, candidate, peer = [10.0, 9.0, 8.0, 7.0], [10.0, 9.1, 8.2, 7.1], [10.0, 9.05, 8.1, 7.1]
    records = [
        {
            **CASE,
            **NAMES,
            "record": "backward_stage",
            "stage": "layer.2.output",
            "kind": "activation gradient",
            "status": backward,
            "rel_l2": 0.9 if backward == "fail" else 0.2,
            "limit": 0.75,
        },
        {
            **CASE,
            **NAMES,
            "record": "backward_verdict",
            "status": backward,
            "bound": 0.5,
            "first_diverging_stage": "layer.2.output" if backward == "fail" else None,
            "failed": int(backward == "fail"),
            "violations": "layer.2.output: rel_l2=0.9 > 0.5" if backward == "fail" else "",
            "worst_stage": "layer.2.output",
            "worst_rel_l2": 0.9 if backward == "fail" else 0.2,
        },
        *(
            {**CASE, **NAMES, "record": "trajectory_step", "step": i, "loss_reference": r, "loss_candidate": c}
            | {"loss_peer": p}
            for i, (r, c, p) in enumerate(zip(reference, candidate, peer))
        ),
        {
            **CASE,
            **NAMES,
            "record": "trajectory_verdict",
            "status": trajectory,
            "steps": 4,
            "violations": "loss step 2: rel diff 0.025 > 0.02" if trajectory == "fail" else "",
            "max_step_loss_rel_diff": 0.025,
            "final_weights_rel_l2": 0.01,
            "loss_limit": 0.02 if trajectory == "fail" else 0.05,
            "weights_limit": 0.05,
            "loss_first": 9.5,
            "loss_last_reference": 7.5,
            "loss_last_candidate": 7.7,
        },
        {**CASE, "precision": "mxfp8", "record": "backward_verdict", "status": "skipped", "reason": "needs Blackwell"},
    ]
    if objective:  # records written before the classification objective have none: MLM
        records = [{**r, "objective": objective} for r in records]
    result = make_result("parity", records, {"source": "random-init", "seed": seed}, {}, env={"gpu_name": gpu})
    result["created"] = created or result["created"]
    return result


def _section(results) -> str:
    sections, verdict = build_report(results)
    (training,) = [s for s in sections if s.title.startswith("Training")]
    return "\n".join(training.text + [str(t.rows) for t in training.tables]), verdict


def test_a_training_failure_fails_the_verdict_and_says_where():
    text, verdict = _section([_training(trajectory="fail")])
    gate = verdict["gpus"]["H200"]["gates"]["training"]
    assert gate["status"] == "fail" and gate["counted"] == 2
    assert gate["failing"] == ["mlm trajectory V1-10M te fp8-delayed · random weights, seed 0"]
    assert verdict["overall"] == "FAIL" and verdict["gpus"]["H200"]["verdict"] == "FAIL"
    assert "FAIL · 4 steps · loss 0.025 (limit 0.02) · final weights 0.01 (limit 0.05) · loss step 2" in text
    assert "PASS · worst layer.2.output 0.2 (limit 0.75, bound 0.5)" in text  # the limit its own run held it to
    assert "skipped: needs Blackwell" in text
    assert "H200: each case is 4 cells of up to 256 tokens; reference hf-eager@fp64; trajectories of 4 AdamW" in text
    _, verdict = _section([_training(backward="fail")])
    assert verdict["gpus"]["H200"]["verdict"] == "FAIL"


def test_a_newer_training_pass_of_other_weights_never_hides_a_fail():
    failed = _training(trajectory="fail", seed=0)
    passed = _training(seed=1, created="2099-01-01T00:00:00+0000")
    text, verdict = _section([failed, passed])
    assert (
        verdict["overall"] == "FAIL"
        and "V1-10M · random weights, seed 0" in text
        and "V1-10M · random weights, seed 1" in text
    )
    fixed = _training(seed=0, created="2099-01-02T00:00:00+0000")  # the same weights, run again: it replaces
    _, verdict = _section([failed, passed, fixed])
    assert verdict["gpus"]["H200"]["gates"]["training"]["status"] == "pass"
    (superseded,) = verdict["superseded"]  # the fixed failure stays visible
    assert superseded["case"].startswith("mlm trajectory V1-10M te fp8-delayed · random weights, seed 0")
    assert (superseded["older_status"], superseded["newer_status"]) == ("fail", "pass")


def test_a_newer_pass_of_the_other_objective_never_hides_a_fail():
    classify = _training(trajectory="fail", objective="classify")
    mlm = _training(created="2099-01-01T00:00:00+0000")  # no objective recorded: MLM
    text, verdict = _section([classify, mlm])
    assert verdict["overall"] == "FAIL" and verdict["gpus"]["H200"]["verdict"] == "FAIL"
    assert "'cell-classifier fine-tuning', 'V1-10M', 'te', 'fp8-delayed'" in text
    assert "'MLM pretraining', 'V1-10M', 'te', 'fp8-delayed'" in text


def test_without_training_results_a_gpu_says_its_training_is_not_covered():
    parity_only = make_result("parity", [], {"source": "random-init", "seed": 0}, {}, env={"gpu_name": H200})
    _, verdict = build_report([parity_only, _training(gpu="NVIDIA H100 80GB HBM3")])
    assert "H200: training parity" in verdict["not_covered"]
    assert "H100: training parity" not in verdict["not_covered"]


def test_each_loss_curve_is_drawn_in_its_labels_style_with_the_judged_difference():
    (cases,) = _newest_trajectory_steps([_training()]).values()
    fig = draw_loss_curves("H200", "V1-10M", cases)
    losses, diffs = fig.axes
    drawn = {line.get_label(): line for line in losses.get_lines()}
    assert sorted(drawn) == ["H200 hf-eager bf16", "H200 hf-eager fp64", "H200 te fp8-delayed"]
    for label, line in drawn.items():
        want = series_style(*label.split()[1:], "H200")
        assert (line.get_color(), line.get_marker(), line.get_linestyle()) == tuple(want.values()), label
    candidate = next(line for line in diffs.get_lines() if line.get_label() == "H200 te fp8-delayed")
    # the largest judged difference so far (relative above 1 nat): the last value is the verdict's
    assert list(candidate.get_ydata()) == [1e-9, (9.1 - 9.0) / 9.0, (8.2 - 8.0) / 8.0, (8.2 - 8.0) / 8.0]
    assert "H200 hf-eager fp64" not in {line.get_label() for line in diffs.get_lines()}  # no distance from itself
    plt.close(fig)


def _train_point(backend, precision, cells_per_s, layout="bucketed"):
    return {
        "record": "point",
        "status": "reported",
        "forward": "train",
        "variant": "V1-10M",
        "backend": backend,
        "precision": precision,
        "layout": layout,
        "batch": 8,
        "seq_len": 2048,
        "cells_per_s": cells_per_s,
        "tokens_per_s": cells_per_s * 1000,
        "tflops": 50.0,
        "ceiling_fraction": 0.1,
        "peak_mem_bytes": 2**32,
        "repeats": 10,
        "spread": 0.12 if precision == "fp8-delayed" else 0.02,
    }


def test_training_speedups_divide_within_one_run_and_mark_a_failing_precision(tmp_path):
    env = {"gpu_name": H200}
    old = make_result("perf", [_train_point("hf-sdpa", "bf16", 50.0)], {}, {}, env=env)
    old["created"] = "2000-01-01T00:00:00+0000"
    run = [_train_point("hf-sdpa", "bf16", 100.0), _train_point("te", "bf16", 250.0)]
    run.append(_train_point("te", "fp8-delayed", 275.0))
    new = make_result("perf", run, {}, {}, env=env)
    render_report([old, new, _training(trajectory="fail")], tmp_path)
    md = (tmp_path / "report.md").read_text()
    rows = md[md.index("| training step: GPU |") :]
    assert (
        "| H200 | V1-10M | te | bf16 | bucketed | 8 × 2,048 | 250,000 | 250 (n=10, range 2%) | 50 (10%) | 4 "
        "| 2.5× (range 2%) |  |" in rows
    )
    assert (  # each speed-up with the larger range of its two points, flagged beyond the noise limit
        "| te | fp8-delayed | bucketed | 8 × 2,048 | 275,000 | ⚠ 275 (n=10, range 12%) | 50 (10%) | 4 "
        "| ⚠ 2.75× (range 12%) | ⚠ 1.1× (range 12%) (training parity" in rows
    )
    assert "![" in md and "training-H200-mlm-V1-10M.png" in md


def _band(precision, status="pass", inconclusive=False, objective="classify", lr=5e-5, gap=0.01, unstable=False):
    verdict = {
        "unstable": unstable,
        "variant": "V1-10M", "objective": objective, "steps": 200, "seeds": 3, "lr": lr, "record": "band_verdict",
        "backend": "te", "precision": precision, "reference": "hf-sdpa@bf16, 3 seeds", "status": status,
        "inconclusive": inconclusive, "final_loss_reference": 0.44, "final_loss_candidate": 0.45,
        "final_accuracy_reference": 0.81, "final_accuracy_candidate": 0.8, "paired_gap": gap,
        "paired_gap_seed": 1, "paired_gap_step": 200,
        "violations": "cannot judge: the reference learned only the gene frequencies" if inconclusive else "",
    }  # fmt: skip
    env = {"gpu_name": H200, "compute_capability": "9.0", "gpu_memory_gib": 140.4}
    return make_result("parity", [verdict], {"source": "random-init", "seed": 0}, {}, env=env)


def test_the_recipe_table_answers_from_the_bands_that_could_judge():
    from reports.training_band import band_table, recipe_table

    results = [
        _band("bf16"),
        _band("fp8-block", gap=0.7),
        _band("fp8-block", "fail", inconclusive=True, objective="mlm"),
        _band("fp8-current", "fail", inconclusive=True, objective="mlm"),
        _band("fp8-delayed", "fail", lr=1e-4),
        _band("fp8-delayed", "fail", objective="mlm", lr=1e-3, unstable=True),
        _band("bf16", "pass", objective="mlm", lr=1e-3, unstable=True),  # a pass in a spiky band still counts
    ]
    rows = {r[1]: r for r in recipe_table(results).rows}
    assert rows["bf16"][2] == "yes" and rows["bf16"][3].startswith("2 of 2")
    assert rows["fp8-block"][2] == "yes" and rows["fp8-block"][3].startswith("1 of 2")  # the MLM band cannot judge
    assert rows["fp8-block"][4].startswith(
        "0.7 (V1-10M cell classifier lr 5e-05, seed 1)"
    )  # a passing band's gap shows
    assert rows["fp8-current"][2] == "cannot judge" and rows["fp8-current"][3] == "0 of 1"
    assert rows["fp8-delayed"][2] == (
        "no (fails: V1-10M classify lr 0.0001) (unstable reference, not counted: V1-10M mlm lr 0.001)"
    )
    assert rows["fp8-delayed"][3].startswith("1 of 2")
    answers = [r[5] for r in band_table(results).rows]
    assert any(a.startswith("unstable at this lr: ") for a in answers)
    assert "cannot judge: the reference learned only the gene frequencies" in answers
