"""Training on fresh cells judged on held-out cells (harness/parity/training_band.py): the band rule,
the split and the batches, and ``gfqual train-band`` end to end on the CPU."""

from __future__ import annotations

import json
import math

import pytest

from harness.cli import main
from harness.parity.band_rule import judge_band
from harness.parity.training_band import BandSpec, CellPool


def _rows(losses_by_seed: dict[int, list[float]], every: int = 10) -> list[dict]:
    return [
        {"step": i * every, "seed": seed, "held_out_loss": loss, "held_out_accuracy": 0.5}
        for seed, losses in losses_by_seed.items()
        for i, loss in enumerate(losses)
    ]


@pytest.fixture(scope="module")
def tokenized_v1(make_tokenized):
    """40 synthetic cells with planted states (obs cell_state), tokenized for V1-10M."""
    return make_tokenized(40, genes=1500, max_len=64, obs_columns=["cell_state"]) / "tok"


REFERENCE = _rows({0: [10.0, 8.0, 6.0], 1: [10.1, 8.4, 6.3], 2: [9.9, 8.2, 6.1]})


def test_a_candidate_inside_the_seed_band_passes():
    candidate = _rows({0: [10.0, 8.1, 6.1], 1: [10.05, 8.3, 6.2], 2: [9.95, 8.2, 6.2]})
    verdict = judge_band(REFERENCE, candidate, allowance=0.0)
    assert verdict["status"] == "pass", verdict
    assert verdict["outside_by"] == 0.0


def test_a_candidate_that_learns_slower_than_every_seed_fails_at_its_worst_step():
    candidate = _rows({0: [10.0, 8.9, 6.2], 1: [10.05, 9.0, 6.2], 2: [9.95, 8.8, 6.2]})
    verdict = judge_band(REFERENCE, candidate, allowance=0.0)
    assert verdict["status"] == "fail"
    assert verdict["worst_step"] == 10
    assert verdict["band_high"] == 8.4
    assert verdict["outside_by"] == pytest.approx(8.9 - 8.4)
    assert "step 10" in verdict["violations"]


def test_the_allowance_widens_the_band_by_a_fraction_of_the_reference_loss():
    candidate = _rows({0: [10.0, 8.5, 6.2], 1: [10.0, 8.5, 6.2], 2: [10.0, 8.5, 6.2]})
    assert judge_band(REFERENCE, candidate, allowance=0.0)["status"] == "fail"
    assert judge_band(REFERENCE, candidate, allowance=0.02)["status"] == "pass"  # 8.4 + 0.02 x 8.2


def test_a_classifier_whose_accuracy_leaves_the_seed_band_fails_though_its_loss_stays():
    reference = [dict(r, held_out_accuracy=[0.4, 0.6, 0.8][r["step"] // 10]) for r in REFERENCE]
    candidate = [dict(r, held_out_accuracy=[0.4, 0.6, 0.5][r["step"] // 10]) for r in REFERENCE]
    verdict = judge_band(reference, candidate, allowance=0.0, majority_share=0.3, cells=20)
    assert verdict["status"] == "fail" and not verdict["inconclusive"]
    assert verdict["violations"] == "held-out accuracy 0.500 at step 20 outside the reference seeds' [0.800, 0.800]"
    # one held-out cell either way is within the band: accuracy cannot resolve less
    one_off = [dict(r, held_out_accuracy=[0.4, 0.6, 0.75][r["step"] // 10]) for r in REFERENCE]
    assert judge_band(reference, one_off, allowance=0.0, majority_share=0.3, cells=20)["status"] == "pass"
    assert judge_band(reference, one_off, allowance=0.0, majority_share=0.3, cells=40)["status"] == "fail"
    assert judge_band(reference, reference, allowance=0.0, majority_share=0.3)["status"] == "pass"


def test_a_diverged_candidate_fails_whatever_the_band():
    candidate = _rows({0: [10.0, math.nan, 6.0], 1: [10.0, 8.2, 6.2], 2: [10.0, 8.2, 6.2]})
    verdict = judge_band(REFERENCE, candidate, allowance=1.0)
    assert verdict["status"] == "fail" and "diverged" in verdict["violations"]


def test_a_band_the_reference_learned_nothing_in_cannot_judge_and_fails_inconclusive():
    flat = _rows({0: [6.0, 6.1, 6.0], 1: [6.2, 6.2, 6.3], 2: [6.1, 6.0, 6.2]})
    verdict = judge_band(flat, flat, allowance=0.0)
    assert verdict["status"] == "fail" and verdict["inconclusive"] is True
    assert verdict["violations"].startswith("cannot judge: the reference's held-out loss did not fall")


def test_a_classifier_no_better_than_the_most_common_class_cannot_judge():
    # REFERENCE's accuracy is 0.5 at every step: with a majority class of 0.48 it learned only frequencies
    verdict = judge_band(REFERENCE, REFERENCE, allowance=0.0, majority_share=0.48)
    assert verdict["status"] == "fail" and verdict["inconclusive"] is True
    assert "learned only the class frequencies (held-out accuracy 0.500" in verdict["violations"]
    assert judge_band(REFERENCE, REFERENCE, allowance=0.0, majority_share=0.40)["status"] == "pass"


def test_mlm_a_hair_under_the_gene_frequencies_cannot_judge():
    """REFERENCE ends at a mean of 6.133 nats: 0.01 under the unigram loss is frequencies (inconclusive),
    0.06 under is learning (judged)."""
    verdict = judge_band(REFERENCE, REFERENCE, allowance=0.0, unigram=6.133 + 0.01)
    assert verdict["status"] == "fail" and verdict["inconclusive"] is True
    assert "learned only the gene frequencies" in verdict["violations"] and "0.05 nats below" in verdict["violations"]
    assert judge_band(REFERENCE, REFERENCE, allowance=0.0, unigram=6.133 + 0.06)["status"] == "pass"


def test_a_band_failed_where_the_reference_itself_spikes_says_so():
    """A reference seed whose held-out loss climbs back >= 0.1 nats above its best marks the band
    unstable; a candidate outside it is still a failure, and its violation names the spike."""
    spiky = _rows({0: [10.0, 8.0, 8.3], 1: [10.1, 8.4, 8.2], 2: [9.9, 8.2, 8.1]})  # seed 0 rises 0.3 at step 20
    worse = _rows({0: [10.0, 8.6, 8.3], 1: [10.05, 8.6, 8.2], 2: [9.95, 8.6, 8.2]})  # 0.2 above, within the 0.3 spike
    verdict = judge_band(spiky, worse, allowance=0.0)
    assert verdict["status"] == "fail" and verdict["unstable"] is True
    assert (verdict["reference_rise_seed"], verdict["reference_rise_step"]) == (0, 20)
    assert verdict["reference_rise"] == pytest.approx(0.3)
    assert "its seed 0's held-out loss rose 0.30 nats above its best by step 20" in verdict["violations"]
    far = _rows({0: [10.0, 9.5, 9.0], 1: [10.05, 9.5, 9.0], 2: [9.95, 9.5, 9.0]})  # 0.7 above: its own miss
    assert judge_band(spiky, far, allowance=0.0)["unstable"] is False
    steady = judge_band(REFERENCE, worse, allowance=0.0)  # REFERENCE only falls: not unstable
    assert steady["unstable"] is False and "unstable" not in steady["violations"]


def test_a_miss_in_a_band_whose_seeds_split_on_learning_cannot_judge():
    """A classifier whose reference seeds disagree on whether they left the plateau (seed 2 learned,
    0 and 1 stayed at the majority class) spans where escapes fall: a candidate whose runs escape
    earlier misses it by chance, and fails inconclusive, never a pass; a band all seeds learned in
    keeps the miss as the candidate's own."""

    def run(accuracy_by_seed):
        return [
            {"step": step, "seed": seed, "held_out_loss": 1.2 - 0.6 * (acc > 0.5) * step / 20, "held_out_accuracy": acc}
            for seed, accs in accuracy_by_seed.items()
            for step, acc in zip((0, 10, 20), accs)
        ]

    split = run({0: [0.3, 0.4, 0.4], 1: [0.3, 0.4, 0.4], 2: [0.3, 0.4, 0.9]})
    early = run({0: [0.3, 0.9, 0.9], 1: [0.3, 0.9, 0.9], 2: [0.3, 0.4, 0.9]})
    verdict = judge_band(split, early, allowance=0.0, majority_share=0.4, cells=64)
    assert verdict["status"] == "fail" and verdict["inconclusive"] is True
    assert "seeds split on learning (1 of 3 learned by step 20: seed 2)" in verdict["violations"]
    assert verdict["violations"].startswith("held-out loss")  # the miss itself stays named
    all_learned = run({0: [0.3, 0.4, 0.9], 1: [0.3, 0.4, 0.9], 2: [0.3, 0.4, 0.9]})
    own = judge_band(all_learned, early, allowance=0.0, majority_share=0.4, cells=64)
    assert own["status"] == "fail" and own["inconclusive"] is False
    assert judge_band(split, split, allowance=0.0, majority_share=0.4, cells=64)["status"] == "pass"
    # MLM: seeds split on the gene-frequency margin
    mlm = _rows({0: [10.0, 8.0, 6.0], 1: [10.1, 8.4, 6.3], 2: [9.9, 8.2, 6.1]})
    slow = _rows({0: [10.0, 8.9, 6.2], 1: [10.05, 9.0, 6.2], 2: [9.95, 8.8, 6.2]})
    assert judge_band(mlm, slow, allowance=0.0, unigram=6.2)["inconclusive"] is True  # 6.0, 6.1 learned; 6.3 not
    assert judge_band(mlm, slow, allowance=0.0, unigram=7.0)["inconclusive"] is False  # all learned: its own miss


def test_a_run_that_leaves_its_seeds_trajectory_is_named_by_the_paired_gap():
    # seed 1 ends 0.05 above its own reference, yet the mean stays inside the band the seeds span
    candidate = _rows({0: [10.0, 8.0, 6.0], 1: [10.1, 8.4, 6.35], 2: [9.9, 8.2, 6.1]})
    verdict = judge_band(REFERENCE, candidate, allowance=0.0)
    assert verdict["status"] == "pass"
    assert (verdict["paired_gap_seed"], verdict["paired_gap_step"]) == (1, 20)
    assert verdict["paired_gap"] == pytest.approx(0.05)


def test_held_out_cells_never_reach_a_training_batch_and_each_epoch_sees_every_cell_once():
    cells = [[i + 10] * 5 for i in range(30)]
    spec = BandSpec("V1-10M", batch_cells=4, held_out=0.2)
    pool = CellPool.from_cells(cells, None, spec)
    assert len(pool.held_out) == 6 and len(pool.train) == 24
    assert not {tuple(c) for c in pool.held_out} & {tuple(c) for c in pool.train}
    steps = pool.batches(steps=12, size=4, seed=3)
    first_epoch = [i for b in steps[:6] for i in b]
    assert sorted(first_epoch) == list(range(24))
    assert pool.batches(12, 4, seed=3) == steps and pool.batches(12, 4, seed=4) != steps


def test_a_pool_too_small_to_train_is_refused_with_the_numbers():
    with pytest.raises(Exception, match="give more cells"):
        CellPool.from_cells([[5, 6]] * 5, None, BandSpec("V1-10M", batch_cells=8))


def test_train_band_end_to_end_on_the_cpu(tmp_path, tokenized_v1):
    out = tmp_path / "band.json"
    rc = main(
        [
            "train-band", "--cells", str(tokenized_v1), "--variant", "V1-10M", "--objective", "classify",
            "--label-column", "cell_state", "--backend", "te-format-torch", "--precisions", "fp32",
            "--reference-precision", "fp32", "--seeds", "2", "--steps", "8", "--eval-every", "4",
            "--batch-cells", "4", "--max-len", "24", "--lr", "1e-3", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    records = json.loads(out.read_text())["records"]
    points = [r for r in records if r["record"] == "band_point"]
    assert {(r["backend"], r["seed"], r["step"]) for r in points} == {
        (b, s, t) for b in ("hf-sdpa", "te-format-torch") for s in (0, 1) for t in (0, 4, 8)
    }
    (verdict,) = [r for r in records if r["record"] == "band_verdict"]
    assert verdict["status"] == "pass" and verdict["gating"] is True and verdict["inconclusive"] is False
    assert verdict["final_accuracy_reference"] >= verdict["majority_share"] + 0.05  # it learned the states
    # the TE layout in fp32 trains the same function as HF fp32: the same held-out loss at every step
    by = {(r["backend"], r["seed"], r["step"]): r["held_out_loss"] for r in points}
    assert all(by[("te-format-torch", s, t)] == pytest.approx(by[("hf-sdpa", s, t)], rel=1e-4) for s, t in [(1, 8)])


def _tiny_band(tokens, *more: str) -> list[str]:
    """A train-band command of two steps on the planted-state cells: the TE layout in fp32 against
    HF fp32, a band that learns nothing (inconclusive, exit 1) but exercises every file path."""
    return [
        "train-band", "--cells", str(tokens), "--variant", "V1-10M", "--objective", "classify",
        "--label-column", "cell_state", "--backend", "te-format-torch", "--precisions", "fp32",
        "--reference-precision", "fp32", "--steps", "2", "--eval-every", "2", "--batch-cells", "4",
        "--max-len", "24", *more,
    ]  # fmt: skip


def test_a_band_file_judged_again_keeps_its_runs_and_says_by_what(tmp_path, tokenized_v1, capsys, make_tokenized):
    """--rejudge: the runs of a file judged by today's rule, nothing trained; the same cells or exit 2."""
    first = tmp_path / "band.json"
    argv = _tiny_band(tokenized_v1, "--seeds", "2")
    assert main([*argv, "--out", str(first)]) == 1  # two steps learn nothing: inconclusive
    run = json.loads(first.read_text())
    for r in run["records"]:  # as a file judged by an older rule, before the baselines existed
        if r["record"] == "band_verdict":
            r.update(status="pass", violations="", inconclusive=False)
    first.write_text(json.dumps(run))
    again = tmp_path / "again.json"
    assert main([*argv, "--rejudge", str(first), "--out", str(again)]) == 1
    new = json.loads(again.read_text())
    (verdict,) = [r for r in new["records"] if r["record"] == "band_verdict"]
    assert verdict["status"] == "fail" and verdict["inconclusive"]
    points = [r for r in new["records"] if r["record"] == "band_point"]
    assert points == [r for r in run["records"] if r["record"] == "band_point"]
    assert new["created"] == run["created"] and new["env"] == run["env"]
    assert new["config"]["rejudged"]["from"][0]["sha256"] and "commit" in new["config"]["rejudged"]
    assert new["weights"]["seeds"] == [0, 1] and "seed" not in new["weights"]
    capsys.readouterr()
    fewer = list(argv)
    other = make_tokenized(20, genes=1500, seed=1, max_len=64, obs_columns=["cell_state"])
    fewer[fewer.index(str(tokenized_v1))] = str(other / "tok")
    assert main([*fewer, "--rejudge", str(first), "--out", str(tmp_path / "x.json")]) == 2
    assert "give the --cells the run was given" in capsys.readouterr().err


def test_seeds_run_apart_are_judged_as_one_band(tmp_path, tokenized_v1, capsys):
    """--rejudge A B: seeds run in parallel (--first-seed) join into one band; overlapping seeds,
    a gap or another band's file is bad input (exit 2), never a silently wider band."""
    argv = _tiny_band(tokenized_v1)
    files = {}
    for first, seeds in [(0, 1), (1, 2), (4, 1)]:
        files[first] = tmp_path / f"band-{first}.json"
        main([*argv, "--first-seed", str(first), "--seeds", str(seeds), "--out", str(files[first])])
    assert json.loads(files[1].read_text())["weights"]["seeds"] == [1, 2]
    both = tmp_path / "both.json"
    main([*argv, "--rejudge", str(files[0]), str(files[1]), "--out", str(both)])
    joined = json.loads(both.read_text())
    assert joined["config"]["spec"]["seeds"] == 3 and joined["config"]["spec"]["first_seed"] == 0
    assert joined["weights"]["seeds"] == [0, 1, 2]
    points = [r for r in joined["records"] if r["record"] == "band_point"]
    assert sorted({r["seed"] for r in points}) == [0, 1, 2] and len(points) == 3 * 2 * 2  # seeds x backends x evals
    (verdict,) = [r for r in joined["records"] if r["record"] == "band_verdict"]
    assert verdict["reference"].endswith("3 seeds")
    assert [f["file"] for f in joined["config"]["rejudged"]["from"]] == [str(files[0]), str(files[1])]
    capsys.readouterr()
    for bad, says in [((0, 0), "overlap or leave a gap"), ((0, 4), "overlap or leave a gap")]:
        out = tmp_path / "bad.json"
        assert main([*argv, "--rejudge", *(str(files[k]) for k in bad), "--out", str(out)]) == 2
        assert says in capsys.readouterr().err and not out.exists()
    other = json.loads(files[4].read_text())
    other["config"]["spec"]["lr"] = 1e-3
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main([*argv, "--rejudge", str(files[0]), str(tmp_path / "other.json"), "--out", str(out)]) == 2
    assert "another band (lr differ)" in capsys.readouterr().err


def test_an_interrupted_band_resumes_from_its_finished_runs(tmp_path, tokenized_v1, capsys, monkeypatch):
    """Each finished run goes to OUT.partial.jsonl: killed after two runs, the same command runs only
    the rest and gives what an unbroken run gives; a partial file of another band is refused."""
    from harness.parity import training_band

    argv = _tiny_band(tokenized_v1, "--seeds", "2")
    whole = tmp_path / "whole.json"
    main([*argv, "--out", str(whole)])
    out = tmp_path / "band.json"
    partial = tmp_path / "band.json.partial.jsonl"
    real, calls = training_band.run_seed, []

    def dies_on_the_third(*a, **k):
        calls.append(a[:2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(training_band, "run_seed", dies_on_the_third)
    assert main([*argv, "--out", str(out)]) == 130 and not out.exists()
    assert "band.json.partial.jsonl keeps the finished runs" in capsys.readouterr().err
    assert len(partial.read_text().splitlines()) == 1 + 2  # the band's identity, two runs
    calls.clear()
    assert main([*argv, "--out", str(out)]) == 1  # two steps learn nothing: inconclusive, as the whole run
    assert len(calls) == 2 and "2 runs already finished" in capsys.readouterr().out
    assert not partial.exists()
    points = [[r for r in json.loads(f.read_text())["records"] if r["record"] == "band_point"] for f in (whole, out)]
    assert points[0] == points[1]
    partial.write_text(json.dumps({"band": {"spec": {"lr": 1.0}}}) + "\n")
    assert main([*argv, "--out", str(out), "--overwrite"]) == 2
    assert "holds the finished runs of another band" in capsys.readouterr().err


def test_the_verdict_judges_a_band_from_its_runs_never_from_its_stored_flags(tmp_path, tokenized_v1):
    """Planted in a copy of a band file: a stored pass, or an inconclusive failure relabelled
    unstable. The verdict re-derives each band from the file's own runs, so neither fools it."""
    from harness.results import read_results
    from harness.verdict import judge

    out = tmp_path / "band.json"
    argv = _tiny_band(tokenized_v1, "--seeds", "2", "--out", str(out))
    assert main(argv) == 1  # two steps learn nothing: inconclusive
    for plant in (
        {"status": "pass", "inconclusive": False, "violations": ""},
        {"inconclusive": False, "unstable": True},
    ):
        run = json.loads(out.read_text())
        for r in run["records"]:
            if r["record"] == "band_verdict":
                r.update(plant)
        folder = tmp_path / str(len(plant))
        folder.mkdir()
        (folder / "band.json").write_text(json.dumps(run))
        verdict = judge(read_results(folder))
        (failure,) = verdict["failures"]
        assert (failure["gate"], failure["class"]) == ("training", "inconclusive"), plant
        assert "cannot judge" in failure["detail"]
    assert "(its runs give fail; the file said pass)" in judge(read_results(tmp_path / "3"))["failures"][0]["detail"]


def test_classify_without_a_label_column_is_bad_input(tmp_path, tokenized_v1, capsys):
    rc = main(["train-band", "--cells", str(tokenized_v1), "--variant", "V1-10M", "--objective", "classify"])
    assert rc == 2
    assert "--label-column" in capsys.readouterr().err


def test_a_traced_run_records_every_layers_norms_at_every_step(tmp_path, tokenized_v1):
    out = tmp_path / "trace.json"
    rc = main(
        [
            "train-band", "--cells", str(tokenized_v1), "--variant", "V1-10M", "--backend", "te-format-torch",
            "--precisions", "fp32", "--reference-precision", "fp32", "--seeds", "1", "--steps", "2",
            "--eval-every", "2", "--batch-cells", "4", "--max-len", "24", "--trace", "--lr", "1e-4", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 1  # two MLM steps learn no more than the gene frequencies: the band cannot judge them
    result = json.loads(out.read_text())
    (verdict,) = [r for r in result["records"] if r["record"] == "band_verdict"]
    assert verdict["inconclusive"] and "learned only the gene frequencies" in verdict["violations"]
    assert verdict["unigram_loss"] == result["config"]["cells"]["unigram_loss"] > 0
    assert result["config"]["optimizer"]["lr"] == 1e-4
    traced = [r for r in result["records"] if r["record"] == "band_trace"]
    layers = {r["layer"] for r in traced}
    assert {f"layer {i:02d}" for i in range(6)} <= layers  # V1-10M's six encoder layers
    assert {(r["backend"], r["step"]) for r in traced} == {
        (b, s) for b in ("hf-sdpa", "te-format-torch") for s in (1, 2)
    }
    assert all(r["grad_norm"] > 0 and r["weight_norm"] > 0 for r in traced if r["layer"].startswith("layer"))
