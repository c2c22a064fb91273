"""The data path: synthetic AnnData → streaming tokenizer → Parquet → embeddings, and its bad inputs."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest

from harness.backends import build_backend
from harness.cli import main
from harness.data import stream
from harness.data.stream import read_tokenized, tokenize_to_parquet
from harness.data.synthetic import synthetic_anndata, synthetic_dictionaries
from harness.data.tokenizer import Encoder, TokenizerError, tokenize_h5ad
from harness.embeddings import extract, length_batches
from harness.outputs import Interrupted
from harness.precision import get_precision
from harness.tolerances import CONVERSION_MAX_ABS
from models.hf import random_hf_model
from models.registry import VARIANTS

V1, V2 = VARIANTS["V1-10M"], VARIANTS["V2-104M"]


@pytest.fixture(scope="module")
def dicts():
    return synthetic_dictionaries(V1)


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory, dicts):
    adata = synthetic_anndata(dicts, n_cells=90, n_genes=3000, seed=1)
    path = tmp_path_factory.mktemp("data") / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def test_synthetic_counts_are_realistic_and_carry_the_planted_programs(dicts):
    adata = synthetic_anndata(dicts, n_cells=120, seed=2)
    genes_per_cell = np.diff(adata.X.indptr)
    assert 500 < np.median(genes_per_cell) < 2500 and 2000 < np.median(adata.obs["n_counts"]) < 8000
    assert set(adata.obs["cell_state"]) == {"state_0", "state_1", "state_2"}
    # the planted signal survives tokenization: counting each state's program genes among a cell's
    # 200 top-ranked tokens names the cell's state (chance would be 1/3)
    tok = Encoder(list(adata.var["ensembl_id"]), V1, dicts).encode(adata.X)
    programs = [{dicts.token_ids[g] for g in adata.uns["synthetic"]["programs"][f"state_{s}"]} for s in range(3)]
    predicted = [f"state_{int(np.argmax([len(set(c[:200]) & p) for p in programs]))}" for c in tok.cells]
    assert np.mean(np.array(predicted) == adata.obs["cell_state"].to_numpy()) > 0.9


def test_streamed_parquet_equals_in_memory_tokenization(h5ad, dicts, tmp_path):
    out = tmp_path / "tok"
    summary = tokenize_to_parquet(h5ad, V1, dicts, out, chunk_size=32, obs_columns=("cell_state",), progress=False)
    table = read_tokenized(out)
    expected = tokenize_h5ad(h5ad, V1, dicts)
    assert [list(x) for x in table["input_ids"]] == expected.cells
    assert table["length"].tolist() == [len(c) for c in expected.cells]
    assert summary["cells"] == 90 and summary["cells_per_s_this_run"] > 0
    assert table["cell_state"].tolist() == anndata.read_h5ad(h5ad).obs["cell_state"].tolist()
    assert sorted(p.name for p in out.iterdir()) == [
        "_genes.parquet",
        "_summary.json",
        "part-000000.parquet",
        "part-000001.parquet",
        "part-000002.parquet",
    ]


def test_interrupted_run_resumes_where_it_stopped(h5ad, dicts, tmp_path, interrupt_second_chunk):
    out = tmp_path / "tok"
    with pytest.raises(Interrupted, match="interrupted.*resume"):
        tokenize_to_parquet(h5ad, V1, dicts, out, chunk_size=32, progress=False)
    partial = tmp_path / "tok.partial"
    assert not out.exists() and [p.name for p in partial.glob("*.parquet")] == ["part-000000.parquet"]
    interrupt_second_chunk()  # the real encoder again
    summary = tokenize_to_parquet(h5ad, V1, dicts, out, chunk_size=32, progress=False)
    assert summary["cells"] == 90 and not partial.exists()
    assert [list(x) for x in read_tokenized(out)["input_ids"]] == tokenize_h5ad(h5ad, V1, dicts).cells


def test_bad_data_mid_file_leaves_no_output(dicts, tmp_path):
    adata = synthetic_anndata(dicts, n_cells=60, n_genes=500, seed=3)
    X = adata.X.toarray().astype(np.float32)
    X[50, X[50] > 0] = -1  # a negative count in the second chunk
    adata.X = X
    adata.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(TokenizerError, match="negative"):
        tokenize_to_parquet(tmp_path / "bad.h5ad", V1, dicts, tmp_path / "tok", chunk_size=32, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5ad"]


def test_empty_cells_are_counted_and_filter_pass_is_respected(dicts, tmp_path):
    adata = synthetic_anndata(dicts, n_cells=12, n_genes=500, seed=4)
    X = adata.X.toarray()
    X[3] = 0
    adata.X = X
    adata.obs["n_counts"] = X.sum(1)
    adata.obs["filter_pass"] = [0 if i == 5 else 1 for i in range(12)]
    adata.write_h5ad(tmp_path / "c.h5ad")
    summary = tokenize_to_parquet(tmp_path / "c.h5ad", V1, dicts, tmp_path / "tok", progress=False)
    assert (summary["cells"], summary["empty_cells"], summary["filtered_out"]) == (10, 1, 1)
    assert summary["empty_cell_rows"] == [3]
    assert 3 not in read_tokenized(tmp_path / "tok")["cell_index"].tolist()


def test_symbols_are_mapped_and_unmappable_genes_are_an_error(dicts, tmp_path):
    adata = synthetic_anndata(dicts, n_cells=6, n_genes=200, seed=5)
    ids = adata.var["ensembl_id"].tolist()
    dicts_with_symbols = type(dicts)(
        dicts.family, dicts.token_ids, dicts.medians, {f"SYM{i}": g for i, g in enumerate(ids)}
    )
    by_symbol = anndata.AnnData(X=adata.X, obs=adata.obs, var=pd.DataFrame(index=[f"sym{i}" for i in range(len(ids))]))
    by_symbol.write_h5ad(tmp_path / "sym.h5ad")
    assert tokenize_h5ad(tmp_path / "sym.h5ad", V1, dicts_with_symbols).cells == tokenize_h5ad_from(
        adata, dicts, tmp_path
    )
    with pytest.raises(TokenizerError, match="no Ensembl IDs and no gene-name dictionary"):
        tokenize_h5ad(tmp_path / "sym.h5ad", V1, dicts)


def tokenize_h5ad_from(adata, dicts, tmp_path):
    adata.write_h5ad(tmp_path / "ids.h5ad")
    return tokenize_h5ad(tmp_path / "ids.h5ad", V1, dicts).cells


def test_empty_corrupt_and_missing_files(dicts, tmp_path):
    anndata.AnnData(
        X=np.zeros((0, 3)), var=pd.DataFrame({"ensembl_id": ["a", "b", "c"]}, index=["a", "b", "c"])
    ).write_h5ad(tmp_path / "empty.h5ad")
    (tmp_path / "corrupt.h5ad").write_bytes(b"\x89HDF\r\n garbage")
    for name, message in (
        ("empty.h5ad", "holds no cells"),
        ("corrupt.h5ad", "cannot read"),
        ("missing.h5ad", "does not exist"),
    ):
        with pytest.raises(TokenizerError, match=message):
            tokenize_to_parquet(tmp_path / name, V1, dicts, tmp_path / f"out-{name}", progress=False)
        assert not (tmp_path / f"out-{name}").exists() and not (tmp_path / f"out-{name}.partial").exists()


def test_loom_input_tokenizes_like_h5ad(h5ad, dicts, tmp_path):
    adata = anndata.read_h5ad(h5ad)
    adata.write_loom(tmp_path / "cells.loom")
    assert tokenize_h5ad(tmp_path / "cells.loom", V1, dicts).cells == tokenize_h5ad(h5ad, V1, dicts).cells


def test_existing_output_is_refused(h5ad, dicts, tmp_path):
    """A folder with anything in it is refused; an empty one (made beforehand) is filled."""
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "notes.txt").write_text("mine")
    with pytest.raises(TokenizerError, match="already exists"):
        tokenize_to_parquet(h5ad, V1, dicts, tmp_path / "tok", progress=False)


def test_length_batches_cover_every_cell_once_within_the_budget():
    cells = [[1] * n for n in (5, 40, 12, 40, 3, 25, 7)]
    groups = length_batches(cells, max_tokens=80)
    assert sorted(i for g in groups for i in g) == list(range(len(cells)))
    assert all(len(g) * max(len(cells[i]) for i in g) <= 80 for g in groups if len(g) > 1)


@pytest.fixture(scope="module")
def short_cells(dicts):
    adata = synthetic_anndata(dicts, n_cells=9, n_genes=2000, seed=6)
    return Encoder(list(adata.var["ensembl_id"]), V1, dicts, max_len=48).encode(adata.X).cells


def test_embeddings_agree_across_backends_and_keep_input_order(short_cells):
    cells = [c[: 16 + 4 * i] for i, c in enumerate(short_cells)]  # different lengths: several batches
    model = random_hf_model(V1, seed=0)
    fp32 = get_precision("fp32")
    hf = extract(build_backend("hf-eager", model, fp32, "cpu"), cells, V1, max_tokens=100)
    te = extract(build_backend("te-format-torch", model, fp32, "cpu"), cells, V1, max_tokens=100)
    assert np.abs(hf.vectors - te.vectors).max() <= CONVERSION_MAX_ABS
    alone = extract(build_backend("hf-eager", model, fp32, "cpu"), [cells[4]], V1)
    assert np.abs(alone.vectors[0] - hf.vectors[4]).max() <= CONVERSION_MAX_ABS
    genes = extract(build_backend("hf-eager", model, fp32, "cpu"), cells, V1, mode="gene")
    counts = dict(zip(genes.gene_tokens.tolist(), genes.gene_counts.tolist()))
    token = cells[0][0]
    assert counts[token] == sum(c.count(token) for c in cells)
    with pytest.raises(ValueError, match="V1-10M has no <cls> token"):
        extract(build_backend("hf-eager", model, fp32, "cpu"), cells, V1, mode="cls")


def test_cli_synth_tokenize_embed(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s.h5ad"), "--cells", "12", "--genes", "1500"]) == 0
    assert (
        main(
            [
                "tokenize",
                "--input",
                str(tmp_path / "s.h5ad"),
                "--variant",
                "V1-10M",
                "--dicts",
                "synthetic",
                "--out",
                str(tmp_path / "tok"),
                "--obs-columns",
                "cell_state",
                "--max-len",
                "32",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "embed",
                "--input",
                str(tmp_path / "tok"),
                "--variant",
                "V1-10M",
                "--out",
                str(tmp_path / "e.parquet"),
                "--json",
                str(tmp_path / "perf.json"),
            ]
        )
        == 0
    )
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert frame.shape == (12, 4 + V1.hidden_size)  # length, cell_index, cell_id, cell_state, vector
    assert frame["cell_id"].tolist() == [f"cell_{i}" for i in range(12)] and frame["cell_state"].notna().all()
    assert json.loads((tmp_path / "perf.json").read_text())["records"][0]["cells_per_s"] > 0
    assert "random weights" in capsys.readouterr().out
    # V1 tokens into a V2 model: refused, with what to do
    assert (
        main(["embed", "--input", str(tmp_path / "tok"), "--variant", "V2-104M", "--out", str(tmp_path / "x.parquet")])
        == 2
    )
    assert "was tokenized for V1-10M; V2-104M needs gc104M tokens" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_real_sample_tokenizes_for_v1_and_v2(shared_data, tmp_path):
    from harness.data.tokenizer import Dictionaries

    sample = shared_data / "scrna/celltypist_sample/celltypist_sample_559cells_rawcounts.h5ad"
    for variant in (V1, V2):
        d = Dictionaries.load(shared_data / "geneformer_dicts", variant.dictionary_family)
        summary = tokenize_to_parquet(sample, variant, d, tmp_path / variant.name, progress=False)
        table = read_tokenized(tmp_path / variant.name)
        assert summary["cells"] == 559 and table["length"].max() <= variant.context
        assert 800 < table["length"].median() < 1300  # median 1,209 expressed genes, ~90% in vocabulary
        if variant.has_cls_eos:
            assert all(ids[0] == 2 and ids[-1] == 3 for ids in table["input_ids"])


def test_stream_module_names_its_files():
    assert stream.SUMMARY.startswith("_") and stream.MANIFEST.startswith("_")  # parquet readers skip them


def test_main_job_data_path_check_passes_and_catches_a_fault(short_cells):
    import copy

    import torch

    from harness.parity.metrics import sketch_distance
    from harness.parity.run import compare_cell_embeddings, synthetic_embedding_check

    model = random_hf_model(V1, seed=0)
    rec = synthetic_embedding_check(V1, model, "te-format-torch", "cpu", n_cells=6, max_len=32, seed=0)
    assert rec["status"] == "pass" and rec["cells"].startswith("synthetic") and rec["rel_l2"] < 1e-6
    # each side's fingerprint, for comparing machines (gfqual compare): the TE layout's is the reference's
    assert sketch_distance(rec["ref_emb_sketch"], rec["emb_sketch"]) < 1e-5 and len(rec["emb_sha256"]) == 16
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.bert.encoder.layer[1].output.LayerNorm.weight.mul_(1.001)
    fp32 = get_precision("fp32")
    status, violations, _ = compare_cell_embeddings(
        build_backend("hf-eager", model, get_precision("fp64"), "cpu"),
        build_backend("te-format-torch", broken, fp32, "cpu"),
        short_cells,
        V1,
    )
    assert status == "fail" and "rel_l2" in violations


@pytest.fixture(scope="module")
def barcoded(tmp_path_factory, dicts):
    """24 cells whose obs_names are barcodes, with var names as symbols beside var['ensembl_id'],
    tokenized by the CLI (in reversed barcode order: ids must follow the input, not a sort)."""
    root = tmp_path_factory.mktemp("barcodes")
    adata = synthetic_anndata(dicts, n_cells=24, n_genes=1500, seed=3)
    adata.obs_names = [f"AAACCTG{i:02d}-1" for i in range(24)][::-1]
    adata.write_h5ad(root / "cells.h5ad")
    argv = ["tokenize", "--input", str(root / "cells.h5ad"), "--variant", "V1-10M", "--dicts", "synthetic"]
    assert main([*argv, "--out", str(root / "tok"), "--max-len", "48", "--quiet"]) == 0
    return root, list(adata.obs_names), adata.var


def _embed(tok, out, *extra):
    return main(["embed", "--input", str(tok), "--variant", "V1-10M", "--out", str(out), "--quiet", *extra])


def test_cell_ids_survive_tokenize_and_embed(barcoded, tmp_path):
    root, barcodes, _ = barcoded
    assert read_tokenized(root / "tok")["cell_id"].tolist() == barcodes
    assert _embed(root / "tok", tmp_path / "e.h5ad") == 0
    assert anndata.read_h5ad(tmp_path / "e.h5ad").obs_names.tolist() == barcodes
    assert _embed(root / "tok", tmp_path / "e.parquet") == 0
    assert pd.read_parquet(tmp_path / "e.parquet")["cell_id"].tolist() == barcodes


def test_gene_embeddings_are_keyed_by_ensembl_id_with_symbol_and_token(barcoded, dicts, tmp_path):
    root, _, var = barcoded
    assert _embed(root / "tok", tmp_path / "g.h5ad", "--mode", "gene") == 0
    genes = anndata.read_h5ad(tmp_path / "g.h5ad").var
    assert genes.index.str.startswith("ENSG").all() and len(genes) > 100
    assert [dicts.token_ids[g] for g in genes.index] == genes["token_id"].tolist()
    symbol_of = dict(zip(var["ensembl_id"], var.index))  # the input's own names for its genes
    assert genes["symbol"].tolist() == [symbol_of[g] for g in genes.index]


def test_an_interrupted_embed_resumes_from_its_finished_pieces(barcoded, tmp_path, monkeypatch, capsys):
    """SIGTERM (a killed job; Ctrl-C alike) during the second piece: exit 130, one line naming what
    is kept, no output file; the same command then embeds only the rest, and the result equals an
    uninterrupted run."""
    import os
    import signal
    import time

    from harness import embed_job, embeddings

    root, barcodes, _ = barcoded
    monkeypatch.setattr(embed_job, "PIECE_CELLS", 10)
    real, calls = embeddings.extract, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the warm-up, the first piece, then the second
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
        return real(*args, **kwargs)

    monkeypatch.setattr(embeddings, "extract", interrupted)
    out = tmp_path / "e.h5ad"
    assert _embed(root / "tok", out) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keeps 10 of 24 cells" in err[0] and "resume" in err[0] and not out.exists()
    monkeypatch.setattr(embeddings, "extract", real)
    assert _embed(root / "tok", out) == 0
    done = capsys.readouterr().out
    assert "\n14 cells" in done and "10 cells resumed" in done
    assert not (tmp_path / "e.h5ad.partial").exists()
    assert _embed(root / "tok", tmp_path / "whole.h5ad") == 0
    resumed, whole = anndata.read_h5ad(out), anndata.read_h5ad(tmp_path / "whole.h5ad")
    assert resumed.obs_names.tolist() == barcodes
    np.testing.assert_allclose(resumed.obsm["X_geneformer"], whole.obsm["X_geneformer"], rtol=1e-5, atol=1e-6)
