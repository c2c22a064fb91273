"""The dosage-sensitivity probe's pieces (issue 6 groundwork): labels, folds, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from harness.downstream.dosage import GeneLabels, gene_matrix, load_labels, probe_cv, summarize


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


def test_probe_separates_separable_genes_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.array([1] * 40 + [0] * 120)
    signal = rng.normal(size=(160, 16)) + 3.0 * y[:, None]
    folds = probe_cv(signal, y, seed=1)
    assert len(folds) == 5 and sum(f["n_test"] for f in folds) == 160  # every gene tested exactly once
    assert summarize(folds)["roc_auc_mean"] > 0.95
    noise = summarize(probe_cv(rng.normal(size=(160, 16)), y, seed=1))
    assert 0.3 < noise["roc_auc_mean"] < 0.7
    with pytest.raises(ValueError, match="at least 5 genes"):
        probe_cv(signal[:45], np.array([1] * 3 + [0] * 42))


def test_gene_matrix_keeps_labelled_genes_seen_in_cells():
    labels = GeneLabels(["G1", "G2", "G3", "G4"], np.array([1, 0, 1, 0]))
    token_ids = {"G1": 10, "G2": 11, "G3": 12}  # G4 outside the vocabulary
    X, y, genes, missing = gene_matrix(np.array([10, 12]), np.eye(2), labels, token_ids)  # G2 never expressed
    assert genes == ["G1", "G3"] and y.tolist() == [1, 1] and missing == 2 and X.tolist() == [[1, 0], [0, 1]]
