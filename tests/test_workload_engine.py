"""The throughput engine of the workloads (embeddings, perturbation, the workload bench): it must
compute exactly Geneformer's definitions, in every batch layout, whatever the batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.backends import HFBackend, TEFormatTorchBackend, build_backend
from harness.cli import main
from harness.data.batching import FILLER_SEGMENT, budget_batches, collate
from harness.data.synthetic import rank_value_cells
from harness.embeddings import (
    CPU_TOKEN_BUDGET,
    cell_embedding_stage,
    default_token_budget,
    encode_cells,
    extract,
    layers_to_run,
    mean_over_genes,
    stage_output,
)
from harness.precision import get_precision
from models.hf import random_hf_model
from models.registry import get_variant

V1, V2 = get_variant("V1-10M"), get_variant("V2-104M")
FP32 = get_precision("fp32")
TIGHT = 1e-5  # the same fp32 arithmetic in another batch: only summation order differs


@pytest.fixture(scope="module")
def v1_model():
    return random_hf_model(V1, seed=0)


@pytest.fixture(scope="module")
def v1_cells():
    return rank_value_cells(V1, 11, 96, seed=4)


def _reference_embedding(backend, cell, variant, leave_out=None):
    """Geneformer's definition, one cell alone, through the parity taps and the full forward."""
    batch = collate([cell], variant)
    hidden = stage_output(backend, batch, cell_embedding_stage(variant.num_hidden_layers, -1))
    mask = batch.gene_mask.clone()
    if leave_out is not None:
        mask[0, leave_out] = False
    return mean_over_genes(hidden, mask)[0], hidden[0]


@pytest.mark.parametrize(
    "backend_name,layout",
    [("hf-eager", "padded"), ("hf-sdpa", "padded"), ("te-format-torch", "padded"), ("te-format-torch", "packed")],
)
def test_encode_cells_is_geneformers_definition_in_every_layout(v1_model, v1_cells, backend_name, layout):
    backend = build_backend(backend_name, v1_model, FP32, "cpu")
    leave = [None] * len(v1_cells)
    leave[3], leave[7] = 5, 0
    pick = [(2, 0), (9, 17), (3, 5)]
    pooled = encode_cells(
        backend, v1_cells, V1, layers_to_run(V1, -1), budget=300, leave_out=leave, pick=pick, layout=layout
    )
    for i, cell in enumerate(v1_cells):
        want, hidden = _reference_embedding(backend, cell, V1, leave[i])
        assert torch.allclose(pooled.means()[i], want, atol=TIGHT), i
        for slot, (c, p) in enumerate(pick):
            if c == i:
                assert torch.allclose(pooled.picked[slot], hidden[p], atol=TIGHT)
    assert pooled.real_tokens == sum(map(len, v1_cells)) <= pooled.run_tokens


def test_encode_runs_only_the_layers_asked_for(v1_model):
    """``Backend.encode(batch, n)`` equals the full forward's layer-n output for every backend."""
    batch = collate(rank_value_cells(V1, 3, 40, seed=1), V1)
    for name in ("hf-eager", "hf-sdpa", "te-format-torch"):
        backend = build_backend(name, v1_model, FP32, "cpu")
        for n in (1, 4, 6):
            tapped = stage_output(backend, batch, f"layer.{n - 1}.output")
            encoded = backend.encode(batch, n).float()
            real = batch.attention_mask.bool()
            assert torch.allclose(encoded[real], tapped[real], atol=TIGHT), (name, n)


def test_packed_and_padded_extract_agree_and_cls_reads_position_zero():
    model = random_hf_model(V2, seed=0)
    backend = build_backend("te-format-torch", model, FP32, "cpu")
    cells = rank_value_cells(V2, 5, 40, seed=2)
    padded = extract(backend, cells, V2, max_tokens=128, layout="padded").vectors
    packed = extract(backend, cells, V2, max_tokens=128, layout="packed").vectors
    assert np.abs(padded - packed).max() <= TIGHT
    cls = extract(backend, cells, V2, mode="cls", max_tokens=128, layout="packed").vectors
    _, hidden = _reference_embedding(backend, cells[1], V2)
    assert np.abs(cls[1] - hidden[0].numpy()).max() <= TIGHT


def test_perturbation_shifts_match_embedding_each_copy_alone(v1_model, v1_cells):
    from harness.downstream.perturb import perturb, perturbed_copy

    backend = build_backend("te-format-torch", v1_model, FP32, "cpu")
    cells = [list(map(int, c)) for c in v1_cells[:3]]
    genes = sorted({cells[0][3], cells[1][10], cells[2][0], cells[0][40]})
    goal = np.linspace(-1, 1, V1.hidden_size).astype(np.float32)
    for mode in ("delete", "overexpress"):
        res = perturb(backend, cells, V1, genes, goal, mode, max_tokens=200)  # several chunks and batches
        expected = [(c, p) for c, cell in enumerate(cells) for p, t in enumerate(cell) if t in set(genes)]
        assert [(int(c), int(g)) for c, g in zip(res.cell, res.gene)] == [(c, cells[c][p]) for c, p in expected]
        goal_t = torch.from_numpy(goal)
        for k, (c, p) in enumerate(expected):
            without, _ = _reference_embedding(backend, cells[c], V1, leave_out=p)
            copy = perturbed_copy(cells[c], p, mode, V1)
            moved = 0 if mode == "overexpress" else None
            perturbed, _ = _reference_embedding(backend, copy, V1, leave_out=moved)
            cos = torch.nn.functional.cosine_similarity
            assert res.cos_shift[k] == pytest.approx(float(1 - cos(without, perturbed, dim=0)), abs=1e-5)
            want = float(cos(perturbed, goal_t, dim=0) - cos(without, goal_t, dim=0))
            assert res.goal_shift[k] == pytest.approx(want, abs=1e-5)
        assert len(res.null_goal_shift) == len(cells) and res.noise_floor < 1e-4


def test_budget_batches_cover_every_cell_within_few_shapes():
    cells = rank_value_cells(V2, 60, 700, seed=5)
    for layout, multiple in (("padded", 1), ("padded", 16), ("packed", 1), ("packed", 16)):
        plan = budget_batches(cells, V2, layout, 4096, multiple)
        assert sorted(i for _, rows in plan for i in rows) == list(range(60))
        for batch, rows in plan:
            assert batch.input_ids.numel() % multiple == 0
            if layout == "padded":
                assert batch.input_ids.numel() <= 4096 and batch.input_ids.shape[1] % 128 == 0
            else:
                assert batch.n_cells == len(rows) and batch.max_seqlen == V2.context
                sizes = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1])[batch.n_cells :]
                assert (sizes <= FILLER_SEGMENT).all()  # filler never one long attention segment
        if layout == "packed":  # every pack the budget, the last one a power of two
            totals = [b.input_ids.numel() for b, _ in plan]
            assert set(totals[:-1]) == {4096} and totals[-1] & (totals[-1] - 1) == 0


def test_padded_batches_round_to_the_pad_multiple_kept_a_multiple_of_the_precisions():
    """A padded batch is as long as its longest cell rounded up to the pad multiple, and to the
    precision's token multiple too (FP8's 16): the least length both divide; packs carry no padding."""
    cells = rank_value_cells(V2, 40, 700, seed=5)
    for pad, multiple, step in ((64, 1, 64), (64, 16, 64), (24, 16, 48), (128, 16, 128)):
        for batch, rows in budget_batches(cells, V2, "padded", 4096, multiple, pad_multiple=pad):
            longest = max(len(cells[i]) for i in rows)
            assert batch.input_ids.shape[1] == -(-longest // step) * step, (pad, multiple)
    for pack, rows in budget_batches(cells, V2, "packed", 4096, 16, fixed_shape=False, pad_multiple=64):
        assert pack.input_ids.numel() == -(-sum(len(cells[i]) for i in rows) // 16) * 16


@pytest.mark.parametrize("backend_class,name", [(HFBackend, "hf-sdpa"), (TEFormatTorchBackend, "te-format-torch")])
def test_the_engine_pads_to_the_backends_own_pad_multiple(v1_model, monkeypatch, backend_class, name):
    """``extract`` (``gfqual embed``'s path) rounds padded batches to ``Backend.pad_multiple``
    unless a caller tries another; the embeddings do not depend on it."""
    cells = rank_value_cells(V1, 9, 60, seed=3)  # every cell within 64 tokens
    backend = build_backend(name, v1_model, FP32, "cpu")
    lengths: list[int] = []
    encode = backend.encode
    monkeypatch.setattr(
        backend, "encode", lambda batch, n: lengths.append(batch.input_ids.shape[1]) or encode(batch, n)
    )
    default = extract(backend, cells, V1, max_tokens=300).vectors
    assert lengths and set(lengths) == {backend_class.pad_multiple}
    monkeypatch.setattr(backend_class, "pad_multiple", 64)
    lengths.clear()
    own = extract(backend, cells, V1, max_tokens=300).vectors
    assert lengths and set(lengths) == {64}
    lengths.clear()
    tried = extract(backend, cells, V1, max_tokens=300, pad_multiple=128).vectors
    assert lengths and set(lengths) == {128}
    assert np.abs(own - default).max() <= TIGHT and np.abs(tried - default).max() <= TIGHT


def test_cpu_budget_and_a_cell_longer_than_the_budget(v1_model):
    assert default_token_budget(build_backend("hf-sdpa", v1_model, FP32, "cpu"), V1) == CPU_TOKEN_BUDGET
    cells = [list(range(4, 304)), list(range(4, 54))]
    for layout in ("padded", "packed"):
        plan = budget_batches(cells, V1, layout, 128)
        assert [rows for _, rows in plan] == [[0], [1]]


def test_embed_cli_defaults_h5ad_and_no_silent_overwrite(tmp_path, capsys, make_tokenized):
    import anndata

    made = make_tokenized(10, genes=1500, max_len=64, obs_columns=["cell_state"])
    out = tmp_path / "e.h5ad"
    argv = [
        "embed",
        "--input",
        str(made / "tok"),
        "--variant",
        "V1-10M",
        "--out",
        str(out),
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main(argv) == 0
    adata = anndata.read_h5ad(out)
    assert adata.obsm["X_geneformer"].shape == (10, V1.hidden_size)
    assert list(adata.obs["cell_state"]) == list(anndata.read_h5ad(made / "cells.h5ad").obs["cell_state"])
    assert adata.uns["geneformer"]["backend"] == "hf-sdpa" and adata.uns["geneformer"]["precision"] == "fp32"
    record = json.loads((tmp_path / "r.json").read_text())["records"][0]
    assert record["startup_s"] >= record["startup_imports_s"] > 0 and record["cells"] == 10
    assert record["input_layout"] == "padded" and record["pad_multiple"] == HFBackend.pad_multiple  # its own
    before = out.read_bytes()
    capsys.readouterr()
    assert main(argv[:-2]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*argv[:-2], "--overwrite", "--out", str(tmp_path / "e.txt")]) == 2


def test_workload_bench_records_the_pipeline_and_its_ceiling(tmp_path, make_tokenized):
    tok = make_tokenized(8, genes=1500, max_len=48) / "tok"
    out = tmp_path / "w.json"
    assert (
        main(
            [
                "bench",
                "--workload",
                "embed",
                "--cells",
                str(tok),
                "--variants",
                "V1-10M",
                "--backends",
                "hf-sdpa",
                "te-packed",
                "--precisions",
                "fp32",
                "--repeat-to",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = json.loads(out.read_text())["records"]
    kinds = [r["record"] for r in records]
    # the HF loop's budget, the loops, then hf-sdpa's budget and its two pad multiples
    assert kinds == ["calibration", "plain_loop", "plain_loop", *["calibration"] * 3, "workload", "workload"], kinds
    hf_loop, te_loop = (r for r in records if r["record"] == "plain_loop")
    hf, te = (r for r in records if r["record"] == "workload")
    assert hf_loop["backend"] == "hf-loop" and hf_loop["status"] == "reported" and hf_loop["finite"]
    assert te_loop["backend"] == "te-loop" and te_loop["status"] == "skipped" and "CUDA" in te_loop["reason"]
    assert hf["status"] == "reported" and hf["cells"] == 20
    assert hf["plain_loop"] == "hf-loop" and hf["plain_loop_cells_per_s"] == hf_loop["cells_per_s"]
    assert hf["pipeline_efficiency"] == pytest.approx(hf["cells_per_s"] / hf_loop["cells_per_s"])
    assert hf["max_tokens"] == CPU_TOKEN_BUDGET and hf["budget_from"].startswith("calibration")
    assert hf["equal_max_tokens"] == CPU_TOKEN_BUDGET and hf["equal_budget_cells_per_s"] == hf["cells_per_s"]
    assert hf["input_layout"] == "padded" and hf["ceiling_fraction"] is None  # no GPU: no ceiling measured
    assert hf["tokens_per_s"] == pytest.approx(hf["tokens"] / hf["seconds"])
    assert te["status"] == "skipped" and "CUDA" in te["reason"]
    out = tmp_path / "p.json"
    assert (
        main(
            [
                "bench",
                "--workload",
                "perturb",
                "--cells",
                str(tok),
                "--variants",
                "V1-10M",
                "--backends",
                "hf-sdpa",
                "--precisions",
                "fp32",
                "--perturb-cells",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())["records"]
    assert row["perturbations"] > 0 and row["projected_hours"] > 0
    assert main(["bench", "--workload", "embed", "--sweep", "cpu-smoke", "--cells", str(tok)]) == 2


def test_attention_that_materializes_scores_gets_no_fixed_shape(v1_model):
    """Eager attention (and TE at fp32, unfused) pays for every padded position: its packs hold only
    their cells (rounded to the token multiple) and its budget counts the scores."""
    eager, sdpa = (build_backend(n, v1_model, FP32, "cpu") for n in ("hf-eager", "hf-sdpa"))
    assert eager.materializes_attention and not sdpa.materializes_attention
    assert eager.attention_bytes_per_token(V1) == 3 * 4 * V1.num_attention_heads * V1.context
    cells = rank_value_cells(V1, 9, 300, seed=2)
    loose = budget_batches(cells, V1, "packed", 1024, 16, fixed_shape=False)
    assert [b.input_ids.numel() for b, _ in loose] == [-(-sum(len(cells[i]) for i in g) // 16) * 16 for _, g in loose]
    assert all(b.max_seqlen <= 300 for b, _ in loose)


def test_a_short_pass_is_timed_again_and_its_median_kept():
    """V1-10M's whole pass takes a third of a second: one pass is at the mercy of a hiccup, so passes
    are timed until they add up to MIN_TIMED_S (at most MAX_PASSES); a long pass is timed once."""
    from harness.perf.workload import MAX_PASSES, MIN_TIMED_S, spread, timed_passes

    assert len(timed_passes(lambda: MIN_TIMED_S / 4)) == 4
    assert len(timed_passes(lambda: MIN_TIMED_S / 100)) == MAX_PASSES
    assert timed_passes(lambda: MIN_TIMED_S * 2) == [MIN_TIMED_S * 2]
    assert timed_passes(lambda: 1.0, [MIN_TIMED_S]) == [MIN_TIMED_S]  # a first pass already long enough
    assert spread([1.0, 1.2, 0.9]) == {"passes": 3, "passes_range": pytest.approx(0.3)}
