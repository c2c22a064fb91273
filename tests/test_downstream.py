"""Downstream evaluation: labels, folds, probe, agreement, fine-tuning, perturbation, and the
planted-signal runs end to end (synthetic data; the real files when GFQUAL_SHARED_DATA is set)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.downstream import agreement
from harness.downstream.classify import fold_metrics, gene_folds, individual_folds, probe_scores, summarize
from harness.downstream.dosage import GeneLabels, gene_matrix, load_labels
from harness.downstream.run import REFERENCE, EvalRun, EvalRunner, comparisons, evaluate_cells, evaluate_genes
from harness.downstream.tasks import cell_task_data, gene_task_data
from models.hf import random_hf_model
from models.registry import get_variant

CPU_RUNS = [REFERENCE, EvalRun.parse("te-format-torch@fp32"), EvalRun.parse("te@bf16")]


def test_real_labels_load(shared_data):
    labels = load_labels(shared_data / "gene_labels/dosage_sensitive_tfs/dosage_sens_tf_labels.csv")
    assert (labels.labels == 1).sum() == 122 and (labels.labels == 0).sum() == 368
    assert all(g.startswith("ENSG") for g in labels.genes)


def test_bad_label_files(tmp_path):
    (tmp_path / "a.csv").write_text("gene,label\nENSG1,1\n")
    with pytest.raises(ValueError, match="expected columns"):
        load_labels(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("dosage_sensitive,dosage_insensitive\nENSG1,ENSG1\n")
    with pytest.raises(ValueError, match="labelled both ways"):
        load_labels(tmp_path / "b.csv")


def _probe(X, y, seed=1):
    folds = gene_folds(y, 5, seed)
    return folds, summarize(fold_metrics(y, probe_scores(X, y, folds, 2), folds))


def test_probe_separates_separable_genes_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.array([1] * 40 + [0] * 120)
    folds, signal = _probe(rng.normal(size=(160, 16)) + 3.0 * y[:, None], y)
    assert sorted(np.bincount(folds.fold_of)) == [32] * 5  # every gene tested exactly once
    assert signal["roc_auc_mean"] > 0.95
    _, noise = _probe(rng.normal(size=(160, 16)), y)
    assert 0.3 < noise["roc_auc_mean"] < 0.7
    with pytest.raises(ValueError, match="at least 5 items"):
        gene_folds(np.array([1] * 3 + [0] * 42))


def test_individual_folds_keep_each_donor_in_one_fold():
    y = np.repeat([0, 1, 2], 40)
    donors = np.array([f"d{c}_{i % 4}" for i, c in enumerate(y)])
    folds = individual_folds(y, donors, 5)
    for d in set(donors):
        assert len(set(folds.fold_of[donors == d])) == 1
    with pytest.raises(ValueError, match="3 individuals cannot be split into 5 folds"):
        individual_folds(y, np.array(["a", "b", "c"] * 40), 5)


def test_agreement_is_zero_for_identical_runs_and_catches_a_worse_one():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 60)
    good = np.stack([1 - (y * 0.6 + 0.2), y * 0.6 + 0.2], 1) + rng.normal(0, 0.05, (120, 2))
    same = agreement.metric_differences(y, good, good.copy(), n_boot=100)
    assert same["accuracy_diff"] == 0 and same["accuracy_ci_low"] == 0 == same["accuracy_ci_high"]
    worse = good.copy()
    worse[:40] = worse[:40, ::-1]  # a third of the items flipped
    diff = agreement.metric_differences(y, good, worse, n_boot=200)
    assert diff["accuracy_diff"] < 0 and diff["accuracy_ci_high"] < 0  # the interval excludes 0
    assert agreement.prediction_agreement(good, worse)["n_disagree"] == 40


def test_comparisons_judge_each_non_hf_run_against_its_hf_peer():
    runs = [EvalRun.parse(r) for r in ("hf-sdpa@fp32", "hf-sdpa@bf16", "te@fp32", "te@bf16", "te@fp8-current")]
    judged = {(c.name, r.name) for c, r, j in comparisons(runs) if j}
    assert judged == {("te@fp32", "hf-sdpa@fp32"), ("te@bf16", "hf-sdpa@bf16"), ("te@fp8-current", "hf-sdpa@bf16")}
    with pytest.raises(ValueError, match="unknown precision"):
        EvalRun.parse("te@fp4")


def test_gene_matrix_keeps_labelled_genes_seen_in_cells():
    labels = GeneLabels(["G1", "G2", "G3", "G4"], np.array([1, 0, 1, 0]))
    token_ids = {"G1": 10, "G2": 11, "G3": 12}  # G4 outside the vocabulary
    X, y, genes, missing = gene_matrix(np.array([10, 12]), np.eye(2), labels, token_ids)  # G2 never expressed
    assert genes == ["G1", "G3"] and y.tolist() == [1, 1] and missing == 2 and X.tolist() == [[1, 0], [0, 1]]


@pytest.fixture(scope="module")
def v1_runner():
    variant = get_variant("V1-10M")
    return EvalRunner(random_hf_model(variant, 0), variant, "cpu")


def _rows(records, record, **match):
    return [r for r in records if r["record"] == record and all(r[k] == v for k, v in match.items())]


def test_dosage_probe_recovers_the_planted_genes_end_to_end(v1_runner):
    data = gene_task_data(v1_runner.variant, max_len=256, max_cells=80)
    records = evaluate_genes(data, v1_runner, CPU_RUNS, progress=lambda _m: None)
    ref = _rows(records, "summary", backend="hf-sdpa")[0]
    assert ref["roc_auc_mean"] > 0.8  # chance is 0.5: the signal went counts -> ranks -> embeddings -> probe
    assert len(_rows(records, "prediction", backend="hf-sdpa")) == ref["n_items"]
    assert ref["n_items"] + ref["labelled_genes_not_seen"] == 400
    skipped = _rows(records, "skipped", backend="te")[0]
    assert "CUDA" in skipped["reason"]  # visible, not dropped
    judged = _rows(records, "agreement", backend="te-format-torch")[0]
    assert judged["judged"] and judged["status"] == "pass" and judged["label_agreement"] == 1.0
    assert _rows(records, "published")[0]["roc_auc_mean"] == 0.9142
    shuffled = gene_task_data(v1_runner.variant, max_len=256, max_cells=80)
    shuffled.labels.labels = np.random.default_rng(0).permutation(shuffled.labels.labels)
    control = evaluate_genes(shuffled, v1_runner, [REFERENCE], progress=lambda _m: None)
    assert _rows(control, "summary")[0]["roc_auc_mean"] < 0.7  # and a broken label join is caught


def test_cardiomyopathy_probe_recovers_planted_states_split_by_donor(v1_runner):
    data = cell_task_data(v1_runner.variant, max_len=256, max_cells=90)
    records = evaluate_cells(data, v1_runner, CPU_RUNS[:2], progress=lambda _m: None)
    ref = _rows(records, "summary", backend="hf-sdpa")[0]
    assert ref["split"] == "individual" and ref["n_individuals"] == 12
    # well above chance (1/3), and short of the perfect score that every run got when the task
    # was too easy, so that a candidate that moves the answer can show it (0.74 here)
    assert 0.5 < ref["pooled_accuracy"] < 0.95
    matrix = _rows(records, "confusion", backend="hf-sdpa")
    assert len(matrix) == 9 and sum(r["count"] for r in matrix) == 90
    assert _rows(records, "agreement")[0]["status"] == "pass"


def test_cell_task_names_missing_columns(tmp_path):
    from harness.data.synthetic import synthetic_anndata, synthetic_dictionaries

    variant = get_variant("V1-10M")
    synthetic_anndata(synthetic_dictionaries(variant), n_cells=12, n_genes=300).write_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(ValueError, match="no column 'disease'"):
        cell_task_data(variant, str(tmp_path / "c.h5ad"), "synthetic")
    with pytest.raises(ValueError, match="--labels"):
        gene_task_data(variant, str(tmp_path / "c.h5ad"), "synthetic")


def test_finetuning_trains_the_top_layers_only(v1_runner):
    from harness.downstream.finetune import FineTuneConfig, finetune_cells

    data = cell_task_data(v1_runner.variant, max_len=64, max_cells=30)
    built = []

    def make():
        built.append(v1_runner.backend(REFERENCE))
        return built[-1]

    train, test = np.arange(0, 30, 2), np.arange(1, 30, 2)
    proba, loss = finetune_cells(
        make, data.cells, v1_runner.variant, data.y, train, test, 3, FineTuneConfig(epochs=1, freeze_layers=5)
    )
    assert proba.shape == (15, 3) and np.allclose(proba.sum(1), 1) and np.isfinite(loss)
    fresh = v1_runner.backend(REFERENCE).model.bert.encoder.layer
    tuned = built[0].model.bert.encoder.layer
    assert torch.equal(fresh[4].output.dense.weight, tuned[4].output.dense.weight)  # frozen
    assert not torch.equal(fresh[5].output.dense.weight, tuned[5].output.dense.weight)  # trained


def test_perturbation_copies_and_shift_agreement(v1_runner):
    from harness.downstream.perturb import perturb, perturbed_copy, shift_agreement

    v2 = get_variant("V2-104M")
    cell = [2, 10, 11, 12, 3]  # <cls> genes <eos>
    assert perturbed_copy(cell, 2, "delete", v2) == [2, 10, 12, 3]
    assert perturbed_copy(cell, 3, "overexpress", v2) == [2, 12, 10, 11, 3]
    assert perturbed_copy([10, 11, 12], 2, "overexpress", v1_runner.variant) == [12, 10, 11]
    data = cell_task_data(v1_runner.variant, max_len=64, max_cells=12)
    backend = v1_runner.backend(REFERENCE)
    genes = sorted({t for c in data.cells[:3] for t in c[:4]})
    goal = np.ones(v1_runner.variant.hidden_size, dtype=np.float32)
    a = perturb(backend, data.cells[:3], v1_runner.variant, genes, goal)
    expected = sum(t in set(genes) for c in data.cells[:3] for t in c)  # each gene in each cell holding it
    assert len(a.cos_shift) == expected and (a.cos_shift > 0).all()  # every deletion moves the cell
    torch_layout = v1_runner.backend(EvalRun.parse("te-format-torch@fp32"))
    b = perturb(torch_layout, data.cells[:3], v1_runner.variant, genes, goal)
    agree = shift_agreement(a, b)
    assert agree["goal_shift_pearson"] > 0.999 and agree["sign_agreement_above_floor"] == 1.0


def test_eval_cli_writes_a_labelled_downstream_result(tmp_path, capsys):
    from harness.cli import main
    from harness.results import read_result

    out = tmp_path / "cm.json"
    assert (
        main(
            [
                "eval",
                "cardiomyopathy",
                "--max-len",
                "64",
                "--max-cells",
                "45",
                "--runs",
                "hf-sdpa@fp32",
                "te-format-torch@fp32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = read_result(out)
    assert result["kind"] == "downstream" and result["config"]["synthetic"] is True
    assert result["weights"]["source"] == "random-init"
    assert "random weights" in capsys.readouterr().out


def test_dosage_on_the_real_sample_with_real_dictionaries(shared_data, tmp_path):
    """Acceptance: real labels, the real celltypist cells, real gc30M / gc104M, random-init weights."""
    from harness.cli import main
    from harness.results import read_result

    for variant, cells in (("V1-10M", []), ("V2-104M", ["--max-cells", "120"])):  # all 559 (backed), or 120
        out = tmp_path / f"{variant}.json"
        assert (
            main(
                [
                    "eval",
                    "dosage",
                    "--variant",
                    variant,
                    "--max-len",
                    "64",
                    *cells,
                    "--h5ad",
                    str(shared_data / "scrna/celltypist_sample/celltypist_sample_559cells_rawcounts.h5ad"),
                    "--dicts",
                    str(shared_data / "geneformer_dicts"),
                    "--labels",
                    str(shared_data / "gene_labels/dosage_sensitive_tfs/dosage_sens_tf_labels.csv"),
                    "--runs",
                    "hf-sdpa@fp32",
                    "te-format-torch@fp32",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        result = read_result(out)
        summary = [r for r in result["records"] if r["record"] == "summary"][0]
        assert summary["n_items"] + summary["labelled_genes_not_seen"] == 490
        assert summary["n_positive"] >= 5 and 0.0 <= summary["roc_auc_mean"] <= 1.0
        assert result["weights"]["source"] == "random-init" and result["config"]["synthetic"] is False


def test_downstream_report_renders_from_results(v1_runner, tmp_path):
    from harness.results import make_result
    from reports.downstream import render_downstream_report
    from reports.qualification import render_report

    data = cell_task_data(v1_runner.variant, max_len=64, max_cells=45)
    records = evaluate_cells(data, v1_runner, CPU_RUNS, progress=lambda _m: None)
    genes = gene_task_data(v1_runner.variant, max_len=64, max_cells=40)
    records += evaluate_genes(genes, v1_runner, CPU_RUNS[:2], progress=lambda _m: None)
    result = make_result("downstream", records, {"source": "random-init"}, {"synthetic": True})
    md = render_downstream_report([result], tmp_path / "d").read_text()
    assert (
        "verdict: PASS" in md
        and "| CPU | cardiomyopathy | synthetic | V1-10M | te-format-torch@fp32 | hf-sdpa@fp32 |" in md
    )
    assert "TransformerEngine needs a CUDA GPU" in md  # the skipped TE row keeps its reason
    assert "published reference (not ours; gf-6L-30M" in md and "0.9142" in md
    assert "**Caveat: 1 of these runs use seeded random weights" in md  # above every number a reader could quote
    assert md.index("Caveat") < md.index("| GPU | task |")
    assert (tmp_path / "d" / "downstream-roc.png").stat().st_size > 10_000
    verdict = render_report([result], tmp_path / "q")
    assert verdict["gpus"]["CPU"]["gates"]["downstream"]["status"] == "pass"
    assert "| downstream | PASS · " in (tmp_path / "q" / "report.md").read_text()
