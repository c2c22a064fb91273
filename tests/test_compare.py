"""gfqual compare: drift (an error grown more than 4x, within tolerance or not), perf regressions
beyond the noise on the same GPU, verdicts that changed, cross-GPU embedding consistency from the
records' fingerprints; the committed H100 vs H200 comparison pinned (golden)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from harness.parity.metrics import embedding_fingerprint, sketch_distance
from harness.qualify.compare import compare_folders, render_markdown
from harness.results import REPO_ROOT, make_result, write_result

GOLDEN = REPO_ROOT / "reports" / "rendered" / "compare-h100-h200"
CASE = {"variant": "V1-10M", "backend": "te", "precision": "fp32"}
VECTORS = np.random.default_rng(1).standard_normal((12, 256))


def _env(gpu: str) -> dict:
    return {"gpu_name": f"NVIDIA {gpu}", "driver": "580", "cuda": "13.0", "torch": "2.11", "te": "2.20.2"}


def _folder(tmp_path, name, gpu="H200", error=1e-7, status="pass", cells_per_s=100.0, spread=0.02, vectors=VECTORS):
    folder = tmp_path / name
    weights = {"source": "random-init", "seed": 0}
    parity = [
        {**CASE, "record": "stage", "stage": "final_hidden", "rel_l2": error, "status": status},
        {**CASE, "record": "verdict", "status": status},
        {
            **CASE,
            "record": "embedding",
            "status": "pass",
            "n_cells": 12,
            "rel_l2": 1e-8,
            **embedding_fingerprint(VECTORS, "ref_emb_"),
            **embedding_fingerprint(vectors, "emb_"),
        },
    ]
    point = {**CASE, "record": "point", "status": "reported", "layout": "full", "batch": 8, "seq_len": 2048}
    point |= {"cells_per_s": cells_per_s, "spread": spread}
    write_result(make_result("parity", parity, weights, {}, _env(gpu)), folder / "parity.json")
    write_result(make_result("perf", [point], weights, {"sweep": {"name": "s"}}, _env(gpu)), folder / "perf.json")
    return str(folder)


def test_fingerprints_tell_equal_embeddings_and_estimate_their_distance():
    same = embedding_fingerprint(VECTORS.copy(), "")
    assert same == embedding_fingerprint(VECTORS, "") and sketch_distance(same["sketch"], same["sketch"]) == 0
    moved = VECTORS + 1e-3 * np.random.default_rng(2).standard_normal(VECTORS.shape)
    other = embedding_fingerprint(moved, "")
    true = np.linalg.norm(moved - VECTORS) / np.linalg.norm(VECTORS)
    assert other["sha256"] != same["sha256"]
    assert 0.5 * true < sketch_distance(same["sketch"], other["sketch"]) < 1.5 * true


def test_the_same_results_compare_clean(tmp_path):
    a, b = _folder(tmp_path, "a"), _folder(tmp_path, "b")
    assert main(["compare", a, b, "--out", str(tmp_path / "out")]) == 0
    c = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert not c["drift"] and c["parity_errors"][0]["ratio"] == 1.0
    assert c["embedding_consistency"][0]["candidate"]["same_digest"] is True


def test_drift_regressions_and_changed_verdicts_fail_and_are_named(tmp_path):
    moved = VECTORS * (1 + 1e-3)
    a = _folder(tmp_path, "a")
    b = _folder(tmp_path, "b", error=5e-7, status="fail", cells_per_s=70.0, vectors=moved)
    assert main(["compare", a, b, "--out", str(tmp_path / "out")]) == 1
    c = compare_folders(a, b)
    assert c["flags"] == {
        "parity drift": 1,
        "verdict regressions": 1,
        "perf regressions": 1,
        "embedding drift": 1,
        "overall verdicts worse": 0,
    }
    md = render_markdown(c)
    assert "| stage | V1-10M te fp32 final_hidden | 1e-07 | 5e-07 | 5 | pass → fail | DRIFT |" in md
    assert "| verdict | V1-10M te fp32 | pass | fail | REGRESSION |" in md
    assert "DRIFT" in md and "REGRESSION" in md
    growth = c["parity_errors"][0]
    assert growth["drift"] and growth["ratio"] == pytest.approx(5.0) and growth["status_b"] == "fail"


def test_a_slower_point_is_a_regression_only_beyond_its_noise_and_on_the_same_gpu(tmp_path):
    a = _folder(tmp_path, "a")
    noisy = compare_folders(_folder(tmp_path, "a2", spread=0.2), _folder(tmp_path, "b", cells_per_s=80.0, spread=0.2))
    assert not noisy["perf"][0]["slower_beyond_noise"] and not noisy["drift"]
    other_gpu = compare_folders(a, _folder(tmp_path, "h100", gpu="H100", cells_per_s=70.0))
    assert other_gpu["perf"][0]["slower_beyond_noise"] and not other_gpu["perf"][0]["regression"]
    assert "different GPUs: not regressions" in other_gpu["summary"]


def test_a_folder_without_results_is_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), _folder(tmp_path, "a"), "--out", str(tmp_path / "o")]) == 2
    assert "no results files" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope"), _folder(tmp_path, "b"), "--out", str(tmp_path / "o")]) == 2


def test_the_committed_h100_h200_comparison_shows_what_the_results_give():
    """The committed comparison is fresh (tests/test_committed_reports.py re-renders it); here, what
    it shows: the same software on both, and the same seeded cases give the same parity errors."""
    c = json.loads((GOLDEN / "comparison.json").read_text())
    assert (GOLDEN / "comparison.md").read_text() == render_markdown(c)
    assert [v["key"] for v in c["versions"] if v["changed"]] == ["gpu_name"]
    assert sum(e["a"] == e["b"] for e in c["parity_errors"]) > 0.95 * len(c["parity_errors"])
    assert c["embedding_consistency"][0]["candidate"] is None  # recorded before the fingerprint existed
