"""Rank-value encoding on tiny hand-computed matrices, and the inputs it must refuse."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from harness.data.tokenizer import Dictionaries, TokenizerError, load_pickle_dict, tokenize_counts
from models.registry import VARIANTS

V1 = VARIANTS["V1-10M"]


def _dicts(n_genes: int = 4) -> Dictionaries:
    genes = [f"ENSG{i:011d}" for i in range(V1.vocab_size - 2)]
    tokens = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes)}}
    medians = {g: 1.0 for g in genes}
    medians[genes[1]] = 2.0  # gene 1 is normally twice as expressed: its rank drops
    return Dictionaries("gc30M", tokens, medians)


G = [f"ENSG{i:011d}" for i in range(4)]


def test_hand_computed_ranking_with_ties_and_duplicates():
    counts = np.array(
        [
            [4, 4, 1, 0],  # g0: 4/9*1e4/1, g1: 4/9*1e4/2, g2: 1/9*1e4/1 -> g0 > g1 > g2
            [2, 0, 2, 0],  # tie between g0 and g2: broken by token id (g0 first)
        ]
    )
    tok = tokenize_counts(counts, G, V1, _dicts())
    assert tok.cells == [[2, 3, 4], [2, 4]]
    # duplicate Ensembl IDs are summed: g3 twice (1 + 3) outranks g0 (3)
    dup = tokenize_counts(np.array([[3, 1, 3]]), [G[0], G[3], G[3]], V1, _dicts())
    assert dup.cells == [[5, 2]]


def test_v2_adds_cls_and_eos_and_truncates():
    v2 = VARIANTS["V2-104M"]
    genes = [f"ENSG{i:011d}" for i in range(v2.vocab_size - 4)]
    d = Dictionaries(
        "gc104M",
        {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, **{g: i + 4 for i, g in enumerate(genes)}},
        {g: 1.0 for g in genes},
    )
    tok = tokenize_counts(np.array([[5, 4, 3, 2]]), genes[:4], v2, d, max_len=4)
    assert tok.cells == [[2, 4, 5, 3]]


def test_empty_cells_are_reported_and_skipped_and_unknown_genes_counted():
    tok = tokenize_counts(np.array([[0, 5], [1, 2]]), [G[0], "ENSG_NOT_IN_VOCAB"], V1, _dicts())
    assert tok.empty_cells == [0] and tok.cells == [[2]] and tok.cell_index == [1] and tok.genes_dropped == 1
    tok = tokenize_counts(np.array([[0, 1], [1, 0]]), G[:2], V1, _dicts())
    assert tok.empty_cells == [] and tok.cell_index == [0, 1]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1, -2]]), "negative"),
        (np.array([[0.5, 2.0]]), "not integers"),
    ],
)
def test_bad_counts_are_refused(bad, message):
    with pytest.raises(TokenizerError, match=message):
        tokenize_counts(bad, G[:2], V1, _dicts())


def test_v1_data_into_a_v2_model_is_an_error():
    with pytest.raises(TokenizerError, match="V2-104M needs the gc104M dictionaries"):
        tokenize_counts(np.array([[1, 1]]), G[:2], VARIANTS["V2-104M"], _dicts())


def test_dictionary_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "token_dictionary_gc30M.pkl"
    path.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(TokenizerError, match="refusing to load builtins.print.*use the files of the Geneformer"):
        load_pickle_dict(path)


def test_real_dictionaries_load(shared_data):
    d = Dictionaries.load(shared_data / "geneformer_dicts", "gc30M")
    d.check_variant(V1)
    assert d.token_ids["ENSG00000000003"] == 2 and d.medians["ENSG00000000003"] == pytest.approx(2.0012, abs=1e-4)
