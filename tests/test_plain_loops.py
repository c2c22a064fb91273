"""The independent plain loops (issue 28's anchor): they must compute Geneformer's cell embedding
(so the engine is held to the same work), batch every cell exactly once within the budget, and
share no batching or pooling code with the engine."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch

from harness.backends import build_backend
from harness.data.synthetic import rank_value_cells
from harness.embeddings import extract, layers_to_run
from harness.perf import plain_loops
from harness.perf.workload import best_against_best, calibration_sample, candidate_budgets
from harness.precision import get_precision
from models.hf import random_hf_model
from models.registry import get_variant

V1 = get_variant("V1-10M")


def test_the_loops_import_nothing_of_the_engine():
    tree = ast.parse(inspect.getsource(plain_loops))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("harness") for m in imported), imported


def test_hf_loop_gives_the_engines_cell_embeddings():
    model = random_hf_model(V1, seed=0)
    cells = rank_value_cells(V1, 9, 70, seed=3)
    specials = sorted(V1.special_tokens.values())
    n_layers = layers_to_run(V1, -1)
    bert = plain_loops.hf_encoder(model, n_layers, "cpu", torch.float32)
    # a budget of 150 tokens: batches of one or two cells, some padded, some not
    vectors, seconds = plain_loops.hf_loop(bert, cells, 150, V1.special_tokens["<pad>"], specials, "cpu")
    engine = extract(build_backend("hf-sdpa", model, get_precision("fp32"), "cpu"), cells, V1, max_tokens=300)
    assert seconds > 0 and vectors.shape == engine.vectors.shape
    np.testing.assert_allclose(vectors, engine.vectors, atol=1e-5)


def test_padded_groups_take_every_cell_once_within_the_budget():
    lengths = np.array([70, 3, 64, 65, 200, 1, 128])
    groups = plain_loops.padded_groups(lengths, 256)
    assert sorted(np.concatenate([g for g, _ in groups]).tolist()) == list(range(len(lengths)))
    for rows, width in groups:
        assert width % plain_loops.PAD_MULTIPLE == 0 and width >= lengths[rows].max()
        assert len(rows) == 1 or len(rows) * width <= 256


@pytest.mark.parametrize("budget", [256, 300])
def test_thd_packs_hold_exactly_the_budget_with_cells_end_to_end(budget):
    cells = [list(range(10, 10 + n)) for n in (70, 3, 64, 65, 200, 1, 128, 90)]
    lengths = np.array([len(c) for c in cells])
    groups = plain_loops.thd_groups(lengths, budget)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(cells)))
    for rows in groups:
        ids, positions, cu, segment = plain_loops.thd_pack(cells, rows, budget, pad_id=0)
        assert len(ids) == budget and cu[-1] == budget and np.all(np.diff(cu) <= max(lengths.max(), 64))
        for r, i in enumerate(rows):  # each cell in its segment, positions from 0
            assert ids[cu[r] : cu[r + 1]].tolist() == cells[i]
            assert positions[cu[r] : cu[r + 1]].tolist() == list(range(len(cells[i])))
            assert np.all(segment[cu[r] : cu[r + 1]] == r)
        assert np.all(ids[cu[len(rows)] :] == 0) and np.all(segment[cu[len(rows)] :] >= len(rows))


def test_calibration_candidates_and_sample():
    assert candidate_budgets(348160) == [65536, 131072, 262144, 348160]
    assert candidate_budgets(16384) == [16384]
    cells = [[1] * 100] * 1000  # 100,000 tokens
    assert len(calibration_sample(cells, [10_000])) == 334  # three batches of the largest budget (every 3rd)
    assert len(calibration_sample(cells, [1 << 20])) == 1000


def test_best_against_best_divides_each_backends_best_of_one_run():
    def row(backend, precision, rate, budget):
        return {
            "record": "workload",
            "workload": "embed",
            "status": "reported",
            "variant": "V2-104M",
            "backend": backend,
            "precision": precision,
            "cells_per_s": rate,
            "max_tokens": budget,
        }

    def point(backend, rate, budget):
        return {
            "record": "calibration",
            "variant": "V2-104M",
            "backend": backend,
            "precision": "bf16",
            "max_tokens": budget,
            "cells_per_s": rate,
        }

    records = [
        point("hf-sdpa", 500, 131072), point("hf-sdpa", 450, 348160), row("hf-sdpa", "bf16", 497, 131072),
        row("hf-sdpa-compile", "bf16", 480, 131072),
        point("te-packed", 1000, 131072), point("te-packed", 1050, 348160), row("te-packed", "bf16", 1092, 348160),
        row("te-packed", "fp8-delayed", 1210, 348160),
    ]  # fmt: skip
    bf16, fp8 = best_against_best(records)
    assert (bf16["hf"], bf16["te"], bf16["precision"]) == ("hf-sdpa", "te-packed", "bf16")
    assert bf16["ratio"] == pytest.approx(1092 / 497)
    assert bf16["equal_budget_ratio"] == pytest.approx(1050 / 450)  # the largest budget both were timed at
    assert fp8["ratio"] == pytest.approx(1210 / 497) and fp8["equal_budget_ratio"] is None
    # where both rows timed the equal budget on all the cells, that is the equal-budget ratio
    for r, rate in ((records[2], 465), (records[6], 1071)):
        r.update(equal_max_tokens=348160, equal_budget_cells_per_s=rate)
    assert best_against_best(records)[0]["equal_budget_ratio"] == pytest.approx(1071 / 465)


def test_a_row_is_held_only_to_a_loop_of_its_precision():
    from harness.perf.workload import embed_workload

    model = random_hf_model(V1, seed=0)
    cells = rank_value_cells(V1, 4, 40, seed=2)
    loop = {"backend": "hf-loop", "precision": "bf16", "cells_per_s": 10.0, "max_tokens": 16384}
    *calibration, row = embed_workload(V1, "hf-sdpa", "fp32", cells, model, "test", plain={"hf": loop})
    assert {r["record"] for r in calibration} == {"calibration"} and row["status"] == "reported"
    assert row["plain_loop"] is None and row["pipeline_efficiency"] is None  # fp32 is not bf16's loop
    *_, row = embed_workload(V1, "hf-sdpa", "fp32", cells, model, "test", plain={"hf": {**loop, "precision": "fp32"}})
    assert row["plain_loop"] == "hf-loop" and row["pipeline_efficiency"] == pytest.approx(row["cells_per_s"] / 10.0)


def test_a_padded_backend_calibrates_its_pad_multiple_at_its_fastest_budget_and_a_packed_one_does_not(monkeypatch):
    """The budgets are tried at the backend's own pad multiple; a padded backend then tries each of
    ``PAD_MULTIPLES`` at the fastest budget and runs the workload at the fastest of those; a packed
    backend's batches carry no padding, so it tries none. Every record passes the schema."""
    from harness.backends import TEFormatTorchBackend
    from harness.perf import workload
    from harness.perf.workload import PAD_MULTIPLES, embed_workload
    from harness.results import _record_problem, stamp

    def seconds(r):
        return r["seconds"]

    model = random_hf_model(V1, seed=0)
    cells = rank_value_cells(V1, 6, 60, seed=2)
    monkeypatch.setattr(TEFormatTorchBackend, "pad_multiple", 32)  # its own, unlike any tried
    monkeypatch.setattr(workload, "candidate_budgets", lambda largest: [128, 256, largest])  # a CPU has one
    *calibration, row = embed_workload(V1, "te-format-torch", "fp32", cells, model, "test")
    assert all(_record_problem("perf", stamp(r)) is None for r in [*calibration, row])
    budgets = [r for r in calibration if r["calibrating"] == "max_tokens"]
    padding = [r for r in calibration if r["calibrating"] == "pad_multiple"]
    assert budgets and {r["pad_multiple"] for r in budgets} == {32}
    assert sorted(r["pad_multiple"] for r in padding) == sorted(PAD_MULTIPLES)
    assert {r["max_tokens"] for r in padding} == {min(budgets, key=seconds)["max_tokens"]}
    fastest = min(padding, key=seconds)
    assert (row["max_tokens"], row["pad_multiple"]) == (fastest["max_tokens"], fastest["pad_multiple"])

    monkeypatch.setattr(TEFormatTorchBackend, "input_layout", property(lambda self: "packed"))
    *calibration, row = embed_workload(V1, "te-format-torch", "fp32", cells, model, "test")
    assert calibration and {r["calibrating"] for r in calibration} == {"max_tokens"}
    multiples = {row["pad_multiple"]} | {r["pad_multiple"] for r in calibration}  # a pack: the token multiple alone
    assert row["input_layout"] == "packed" and multiples == {get_precision("fp32").token_multiple}
