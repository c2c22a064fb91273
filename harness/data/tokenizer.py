"""Geneformer's rank-value encoding of cells, from raw counts (V1: gc30M, V2: gc104M).

Per cell: counts / total counts × 10,000, divided by each gene's corpus median (the dictionary's
``gene_median_dictionary``); expressed genes ranked by that value, highest first; mapped to token
ids. V1 keeps the first 2,048; V2 keeps 4,094 and adds ``<cls>`` in front and ``<eos>`` at the end.
Duplicate Ensembl IDs are summed, as Geneformer does. Ties are broken by ascending token id, so
the encoding is deterministic (Geneformer's ``np.argsort`` is not stable and can order tied genes
differently from run to run).

Dictionaries are pickles; they are read with an unpickler that only builds dicts, strings and
numbers (numpy scalars included), so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.registry import Variant

TARGET_SUM = 10_000


class TokenizerError(ValueError):
    """Input the tokenizer cannot encode honestly, with the reason."""


class _DictionaryUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dictionary file")


def load_pickle_dict(path: Path) -> dict:
    with open(path, "rb") as fh:
        data = _DictionaryUnpickler(fh).load()
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} does not hold a dictionary")
    return data


@dataclass
class Dictionaries:
    family: str
    token_ids: dict[str, int]
    medians: dict[str, float]

    @classmethod
    def load(cls, folder: str | Path, family: str) -> "Dictionaries":
        folder = Path(folder)
        if (folder / family).is_dir():
            folder = folder / family
        files = {k: folder / f"{k}_{family}.pkl" for k in ("token_dictionary", "gene_median_dictionary")}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise TokenizerError(f"{family} dictionaries not found: {', '.join(missing)}")
        tokens = {str(k): int(v) for k, v in load_pickle_dict(files["token_dictionary"]).items()}
        medians = {str(k): float(v) for k, v in load_pickle_dict(files["gene_median_dictionary"]).items()}
        return cls(family, tokens, medians)

    def check_variant(self, variant: Variant) -> None:
        if self.family != variant.dictionary_family or len(self.token_ids) != variant.vocab_size:
            raise TokenizerError(
                f"{variant.name} needs the {variant.dictionary_family} dictionaries "
                f"({variant.vocab_size} tokens); these are {self.family} ({len(self.token_ids)} tokens)"
            )


@dataclass
class Tokenized:
    cells: list[list[int]]
    cell_index: list[int]  # row of each kept cell in the input
    empty_cells: list[int] = field(default_factory=list)  # rows with no expressed vocabulary gene
    genes_dropped: int = 0  # input genes absent from the vocabulary or the medians


def _check_counts(values: np.ndarray) -> None:
    if values.size == 0:
        return
    if not np.isfinite(values).all():
        raise TokenizerError("counts contain NaN or infinite values")
    if (values < 0).any():
        raise TokenizerError("counts contain negative values")
    if not np.allclose(values, np.round(values)):
        raise TokenizerError("counts are not integers: raw counts are needed (not normalised or log data)")


def tokenize_counts(
    counts, ensembl_ids: list[str], variant: Variant, dicts: Dictionaries,
    max_len: int | None = None, n_counts: np.ndarray | None = None,
) -> Tokenized:
    """Encode a cells × genes count matrix (dense or scipy sparse) as Geneformer token lists."""
    import scipy.sparse as sp

    dicts.check_variant(variant)
    max_len = min(max_len or variant.context, variant.context)
    X = sp.csr_matrix(counts, dtype=np.float64)
    _check_counts(X.data)
    if X.shape[1] != len(ensembl_ids):
        raise TokenizerError(f"{X.shape[1]} genes in the matrix but {len(ensembl_ids)} gene ids")
    totals = np.asarray(X.sum(axis=1)).ravel() if n_counts is None else np.asarray(n_counts, dtype=np.float64)
    # Sum duplicate Ensembl IDs, then keep the genes both dictionaries know.
    ids = np.asarray([str(g) for g in ensembl_ids])
    unique, inverse = np.unique(ids, return_inverse=True)
    merge = sp.csr_matrix((np.ones(len(ids)), (np.arange(len(ids)), inverse)), shape=(len(ids), len(unique)))
    X = (X @ merge).tocsr()
    known = np.array([g in dicts.token_ids and g in dicts.medians for g in unique])
    genes = unique[known]
    X = X[:, np.flatnonzero(known)].tocsr()
    tokens = np.array([dicts.token_ids[g] for g in genes], dtype=np.int64)
    medians = np.array([dicts.medians[g] for g in genes], dtype=np.float64)
    n_genes = max_len - (2 if variant.has_cls_eos else 0)
    out = Tokenized([], [], genes_dropped=int((~known).sum()))
    for row in range(X.shape[0]):
        start, end = X.indptr[row], X.indptr[row + 1]
        cols, vals = X.indices[start:end], X.data[start:end]
        keep = vals > 0
        cols, vals = cols[keep], vals[keep]
        if cols.size == 0 or totals[row] <= 0:
            out.empty_cells.append(row)
            continue
        score = vals / totals[row] * TARGET_SUM / medians[cols]
        order = np.lexsort((tokens[cols], -score))  # by score descending, ties by token id
        ranked = tokens[cols][order][:n_genes].tolist()
        if variant.has_cls_eos:
            ranked = [variant.special_tokens["<cls>"], *ranked, variant.special_tokens["<eos>"]]
        out.cells.append(ranked)
        out.cell_index.append(row)
    return out


def tokenize_h5ad(
    path: str | Path, variant: Variant, dicts: Dictionaries, max_len: int | None = None,
    gene_column: str = "ensembl_id", layer: str | None = None, max_cells: int | None = None,
) -> Tokenized:
    import anndata

    try:
        adata = anndata.read_h5ad(path, backed="r")
    except Exception as exc:
        raise TokenizerError(f"cannot read {path} as AnnData: {exc}") from exc
    if adata.n_obs == 0:
        raise TokenizerError(f"{path} holds no cells")
    if gene_column not in adata.var:
        raise TokenizerError(f"{path}: var has no {gene_column!r} column of Ensembl IDs")
    rows = slice(0, max_cells) if max_cells else slice(None)
    X = adata.layers[layer][rows] if layer else adata.X[rows]
    n_counts = adata.obs["n_counts"].to_numpy()[rows] if "n_counts" in adata.obs else None
    return tokenize_counts(X, list(adata.var[gene_column]), variant, dicts, max_len, n_counts)
