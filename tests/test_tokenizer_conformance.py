"""gfqual's tokens against upstream Geneformer's ``TranscriptomeTokenizer`` rules, cell by cell.

``upstream_tokens`` transcribes upstream's algorithm (``geneformer/tokenizer.py``, the V2-aware
version: ``collapse_gene_ids=True``, ``model_input_size`` 2,048 / 4,096, ``special_token`` for V2):
map ``var['ensembl_id'].str.upper()`` through ``ensembl_mapping_dict`` restricted to vocabulary
targets; sum the columns that land on one gene only when the mapping merges different IDs
somewhere in the file; divide by ``obs['n_counts']``, × 10,000, ÷ the gene median; rank with
``np.argsort(-x)``; truncate; add ``<cls>``/``<eos>`` for V2. gfqual must give the same tokens in
every cell except where a documented deliberate difference applies (literal duplicate columns in a
file without merges; exact ties), and the tests check those are the only cells that differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from harness.data.tokenizer import Dictionaries, Encoder, TokenizerError, load_pickle_dict, tokenize_counts
from models.registry import VARIANTS

V1, V2 = VARIANTS["V1-10M"], VARIANTS["V2-104M"]


def upstream_tokens(X, ensembl_ids, n_counts, token_dict, median_dict, mapping_dict, variant):
    """(cells, cells with exact ties among their kept genes) by upstream's rules."""
    genes = set(token_dict)
    mapping = {k: v for k, v in mapping_dict.items() if v in genes}
    ids = [str(g) for g in ensembl_ids]
    in_map = [g for g in ids if g in mapping]
    target = [mapping.get(g.upper()) for g in ids]
    X = sp.csc_matrix(X, dtype=np.float64)
    if len(set(in_map)) == len(set(mapping[g] for g in in_map)):  # no merge: every column stays itself
        cols = [(g, X[:, [j]]) for j, g in enumerate(target) if g is not None]
    else:
        order = []
        for g in target:
            if g is not None and g not in order:
                order.append(g)
        summed = {g: sp.csc_matrix((X.shape[0], 1)) for g in order}
        for j, g in enumerate(target):
            if g is not None:
                summed[g] = summed[g] + X[:, [j]]
        cols = [(g, summed[g]) for g in order]
    coding = [(g, c) for g, c in cols if g in genes and not g.startswith("<")]
    tokens = np.array([token_dict[g] for g, _ in coding])
    norm = np.array([median_dict[g] for g, _ in coding])
    M = sp.hstack([c for _, c in coding]).tocsr()
    n_keep = variant.context - (2 if variant.has_cls_eos else 0)
    cells, tied = [], set()
    for i in range(M.shape[0]):
        row = M[i]
        x = row.data / n_counts[i] * 10_000 / norm[row.indices]
        keep = x != 0
        x, idx = x[keep], row.indices[keep]
        ranked = tokens[idx][np.argsort(-x)][:n_keep].tolist()
        if len(np.unique(x)) < len(x):
            tied.add(i)
        if variant.has_cls_eos:
            ranked = [variant.special_tokens["<cls>"], *ranked, variant.special_tokens["<eos>"]]
        cells.append(ranked)
    return cells, tied


def _raw_dicts(shared_data, family):
    folder = shared_data / "geneformer_dicts" / family
    return [
        load_pickle_dict(folder / f"{stem}_{family}.pkl")
        for stem in ("token_dictionary", "gene_median_dictionary", "ensembl_mapping_dict")
    ]


REAL_FILES = {
    "celltypist": "scrna/celltypist_sample/celltypist_sample_559cells_rawcounts.h5ad",
    "chr21": "scrna/10x_v3_grch38_chr21_subset/chr21_subset_1107cells.h5ad",
}


@pytest.mark.parametrize("name", list(REAL_FILES))
@pytest.mark.parametrize("variant", [V1, V2], ids=lambda v: v.name)
def test_tokens_equal_upstream_in_every_real_cell(shared_data, name, variant):
    import anndata

    adata = anndata.read_h5ad(shared_data / REAL_FILES[name])
    token_dict, median_dict, mapping_dict = _raw_dicts(shared_data, variant.dictionary_family)
    n_counts = adata.obs["n_counts"].to_numpy(dtype=float)
    want, tied = upstream_tokens(
        adata.X, adata.var["ensembl_id"], n_counts, token_dict, median_dict, mapping_dict, variant
    )
    dicts = Dictionaries.load(shared_data / "geneformer_dicts", variant.dictionary_family)
    got = tokenize_counts(adata.X, list(adata.var["ensembl_id"]), variant, dicts, n_counts=n_counts)
    assert got.cell_index == [i for i, c in enumerate(want) if len(c) > (2 if variant.has_cls_eos else 0)]
    differ = {i for i, c in zip(got.cell_index, got.cells) if c != want[i]}
    assert differ <= tied, f"cells differing from upstream without a tie: {sorted(differ - tied)[:10]}"


def test_chr21_aliases_reach_their_genes(shared_data):
    """The two alias IDs in the Cell Ranger chr21 file (→ SAMSN1, → IL10RB): IL10RB's alias gives
    one cell IL10RB that only the alias measured and adds its count to IL10RB's in another; SAMSN1's
    alias has no counts. Without the mapping step both would be lost."""
    import anndata

    adata = anndata.read_h5ad(shared_data / REAL_FILES["chr21"])
    dicts = Dictionaries.load(shared_data / "geneformer_dicts", "gc104M")
    ids = list(adata.var["ensembl_id"])
    encoder = Encoder(ids, V2, dicts)
    assert encoder.columns["mapped_to_another_id"] == 2 and encoder.columns["summed_into_another_column"] == 2
    literal = Encoder(ids, V2, dicts, map_genes=False)
    assert literal.columns["used"] == encoder.columns["used"] - 2
    n_counts = adata.obs["n_counts"].to_numpy(dtype=float)
    mapped, plain = encoder.encode(adata.X, n_counts), literal.encode(adata.X, n_counts)
    il10rb = dicts.token_ids["ENSG00000243646"]
    alias_of = ("ENSG00000243440", "ENSG00000272659")  # -> SAMSN1, -> IL10RB
    X = sp.csc_matrix(adata.X)
    with_map, without = dict(zip(mapped.cell_index, mapped.cells)), dict(zip(plain.cell_index, plain.cells))
    changed = {r for r, cell in with_map.items() if without.get(r) != cell}
    expected = {int(r) for alias in alias_of for r in X[:, ids.index(alias)].nonzero()[0]}
    assert changed == expected and changed  # exactly the cells where an alias ID has counts
    gained = [r for r in changed if il10rb in with_map[r] and il10rb not in without.get(r, [])]
    joined = [r for r in changed if il10rb in with_map[r] and il10rb in without.get(r, [])]
    assert len(gained) == len(joined) == 1 and not X[:, ids.index("ENSG00000243440")].nnz


def _tiny_dicts():
    """gc104M-shaped dictionaries over 6 genes, with a mapping holding an alias and a symbol."""
    genes = [f"ENSG{i:011d}" for i in range(V2.vocab_size - 4)]
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, **{g: i + 4 for i, g in enumerate(genes)}}
    medians = {g: 1.0 for g in genes}
    medians[genes[2]] = 4.0
    mapping = {g: g for g in genes} | {"ENSG99999999999": genes[1], "TP53": genes[3], "ENSGRETIRED0001": "ENSGNOTVOCAB"}
    return Dictionaries("gc104M", tokens, medians, mapping=mapping), genes


def test_hand_worked_aliases_symbols_duplicates_and_the_cut_off():
    d, G = _tiny_dicts()
    ids = [G[0], "ensg99999999999", G[1], "TP53", G[2], G[0], "", "ENSGRETIRED0001", G[4] + ".7"]
    counts = np.array([[3, 2, 1, 5, 8, 1, 9, 9, 4]])
    # n = 33: G0 3+1=4, G1 2+1=3 (alias summed in), G3 5 (symbol), G2 8/median 4 = 2, G4 4 (version stripped)
    # scores ∝ G3 5, G0 4, G4 4 (tie: token id G0 6 < G4 8), G1 3, G2 2
    enc = Encoder(ids, V2, d)
    assert enc.encode(counts, np.array([33.0])).cells == [[2, 7, 4, 8, 5, 6, 3]]
    assert enc.columns == {
        "input": 9,
        "used": 7,
        "genes": 5,
        "dropped_empty_id": 1,
        "dropped_not_in_vocabulary": 1,
        "dropped_no_median": 0,
        "mapped_to_another_id": 2,
        "summed_into_another_column": 2,
        "version_suffix_stripped": 1,
    }
    cut = Encoder(ids, V2, d, max_len=4).encode(counts, np.array([33.0]))
    assert cut.cells == [[2, 7, 4, 3]]  # 4,096 − 2 in the real model: the two best genes, then <eos>
    # literally: G0 4, G4 4 (tie: G0 first), G2 8/4 = 2, G1 1 (the alias, the symbol and the retired ID lost)
    assert Encoder(ids, V2, d, map_genes=False).encode(counts).cells == [[2, 4, 8, 6, 5, 3]]


@pytest.mark.parametrize("value", [np.nan, -4.0, 0.0])
def test_bad_n_counts_is_refused_with_the_cell_named(value):
    d, G = _tiny_dicts()
    enc = Encoder(G[:2], V2, d)
    with pytest.raises(TokenizerError, match=r"n_counts'\] is .* cell with obs name 'AAAC-1'.*--recompute-n-counts"):
        enc.encode(np.array([[1, 2], [3, 0]]), np.array([3.0, value]), names=["AACG-1", "AAAC-1"])
    again = Encoder(G[:2], V2, d, recompute_n_counts=True).encode(np.array([[1, 2], [3, 0]]), np.array([3.0, value]))
    assert again.cells == [[2, 5, 4, 3], [2, 4, 3]]
    empty = enc.encode(np.array([[0, 0]]), np.array([0.0]))  # no counts and n_counts 0: an empty cell, not an error
    assert empty.empty_cells == [0]


def _h5ad(path, ids, n_counts=None, counts=None):
    import anndata
    import pandas as pd

    counts = np.array([[3, 1, 0], [0, 2, 5]], dtype=np.int32) if counts is None else counts
    obs = pd.DataFrame(index=["AAAC-1", "AACG-1"])
    if n_counts is not None:
        obs["n_counts"] = n_counts
    var = pd.DataFrame({"ensembl_id": ids}, index=[f"g{i}" for i in range(len(ids))])
    anndata.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var).write_h5ad(path)
    return path


def test_tokenize_cli_metadata_errors_and_versioned_ids(tmp_path, capsys):
    import json

    from harness.cli import main
    from harness.data.synthetic import SYNTHETIC_GENE_PREFIX

    G = [f"{SYNTHETIC_GENE_PREFIX}{i:08d}" for i in range(3)]
    tok = ["tokenize", "--variant", "V1-10M", "--dicts", "synthetic"]
    ok = _h5ad(tmp_path / "ok.h5ad", [g + ".5" for g in G], n_counts=[4.0, 7.0])
    assert main([*tok, "--input", str(ok), "--out", str(tmp_path / "t1")]) == 0
    summary = json.loads((tmp_path / "t1" / "_summary.json").read_text())
    assert summary["cells"] == 2 and summary["gene_columns"]["version_suffix_stripped"] == 3
    capsys.readouterr()
    bad = _h5ad(tmp_path / "nan.h5ad", G, n_counts=[4.0, np.nan])
    assert main([*tok, "--input", str(bad), "--out", str(tmp_path / "t2")]) == 2
    err = capsys.readouterr().err
    assert "'AACG-1'" in err and "--recompute-n-counts" in err and not (tmp_path / "t2").exists()
    assert not (tmp_path / "t2.partial").exists()
    assert main([*tok, "--input", str(bad), "--out", str(tmp_path / "t2"), "--recompute-n-counts"]) == 0
    none = _h5ad(tmp_path / "none.h5ad", ["ENSGNOPE1", "ENSGNOPE2", ""], n_counts=[4.0, 7.0])
    assert main([*tok, "--input", str(none), "--out", str(tmp_path / "t3")]) == 2
    err = capsys.readouterr().err
    assert "no cell was tokenized" in err and "none of its 3 gene columns" in err and "1 empty IDs" in err
    assert not (tmp_path / "t3").exists() and not (tmp_path / "t3.partial").exists()


def test_commands_that_run_no_model_import_neither_torch_nor_transformers(tmp_path):
    """Tokenizing, synthetic counts, the registry and the figures never run a model: they must start
    without torch and transformers (seconds of imports; the qualification report too, checked by hand:
    it renders ~40 files, too slow for this test)."""
    import pickle
    import subprocess
    import sys

    genes = [f"ENSG{i:011d}" for i in range(V1.vocab_size - 2)]
    folder = tmp_path / "dicts" / "gc30M"
    folder.mkdir(parents=True)
    for stem, payload in (
        ("token_dictionary", {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes)}}),
        ("gene_median_dictionary", {g: 1.0 for g in genes}),
    ):
        (folder / f"{stem}_gc30M.pkl").write_bytes(pickle.dumps(payload))
    h5ad = _h5ad(tmp_path / "c.h5ad", genes[:3], n_counts=[4.0, 7.0])
    code = (
        "import sys\nfrom harness.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    rc = e.code\nprint('rc', rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    repo = str(Path(__file__).resolve().parents[1] / "results" / "h100")
    for argv in (
        ["tokenize", "--help"],
        [
            "tokenize",
            "--input",
            str(h5ad),
            "--variant",
            "V1-10M",
            "--dicts",
            str(tmp_path / "dicts"),
            "--out",
            str(tmp_path / "tok"),
        ],
        ["variants"],
        ["synth", "--out", str(tmp_path / "s.h5ad"), "--cells", "4", "--genes", "300"],
        ["report-perf", "--results", repo, "--out", str(tmp_path / "plots")],
    ):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert done.stdout.strip().splitlines()[-1] == "rc 0 False False", done.stdout + done.stderr
