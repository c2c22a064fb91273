"""Geneformer's rank-value encoding of cells, from raw counts (V1: gc30M, V2: gc104M).

Per cell: counts / total counts × 10,000, divided by each gene's corpus median (the dictionary's
``gene_median_dictionary``); expressed genes ranked by that value, highest first; mapped to token
ids. V1 keeps the first 2,048; V2 keeps 4,094 and adds ``<cls>`` in front and ``<eos>`` at the end.

Gene IDs follow upstream's ``TranscriptomeTokenizer`` (``collapse_gene_ids=True``): each ID is
upper-cased and mapped through the family's ``ensembl_mapping_dict`` (kept only where it points
at a vocabulary gene; the identity over the vocabulary when the folder has no such file, as
upstream does), and columns that map onto one gene are summed. So an alias or retired Ensembl ID,
or an upper-case symbol, reaches its gene as upstream's does. ``map_genes=False`` takes IDs
literally (only an ID that is itself in the vocabulary counts).

Where gfqual deliberately differs from upstream (README, "Tokenization rules"):
  * duplicate columns are always summed; upstream sums only when its mapping merges two different
    IDs somewhere in the file, and otherwise emits a literally duplicated gene twice;
  * ties are broken by ascending token id; upstream's ``np.argsort`` (not stable) orders tied
    genes by numpy's sort and the file's gene order;
  * Ensembl version suffixes (``ENSG….12``) are stripped, upstream drops such IDs;
  * ``n_counts`` that is NaN, negative, or zero for a cell with counts is refused (or recomputed
    from the row on request); upstream divides by it.

Dictionaries are pickles; they are read with an unpickler that only builds dicts, strings and
numbers (numpy scalars included), so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import GfqualError
from models.registry import Variant

TARGET_SUM = 10_000


class TokenizerError(GfqualError, ValueError):
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
    try:
        with open(path, "rb") as fh:
            data = _DictionaryUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise TokenizerError(
            f"{path} is not a readable Geneformer dictionary ({type(exc).__name__}: {exc}); "
            "use the files of the Geneformer release"
        ) from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} does not hold a dictionary")
    return data


@dataclass
class Dictionaries:
    """One family's dictionaries: token ids and medians by Ensembl ID, and symbol → Ensembl ID."""

    family: str
    token_ids: dict[str, int]
    medians: dict[str, float]
    symbols: dict[str, str] = field(default_factory=dict)
    mapping: dict[str, str] | None = None  # upper-case ID or symbol -> vocabulary gene (None: identity)

    FILES = {
        "token_ids": "token_dictionary",
        "medians": "gene_median_dictionary",
        "symbols": "gene_name_id_dict",
        "mapping": "ensembl_mapping_dict",
    }

    def __post_init__(self):
        genes = {g for g in self.token_ids if not g.startswith("<")}
        source = self.mapping if self.mapping is not None else {g: g for g in genes}
        self.mapping = {str(k).upper(): str(v) for k, v in source.items() if v in genes}

    @classmethod
    def load(cls, folder: str | Path, family: str) -> "Dictionaries":
        folder = Path(folder)
        if (folder / family).is_dir():
            folder = folder / family
        files = {k: folder / f"{stem}_{family}.pkl" for k, stem in cls.FILES.items()}
        missing = [str(p) for k, p in files.items() if k in ("token_ids", "medians") and not p.is_file()]
        if missing:
            raise TokenizerError(f"{family} dictionaries not found: {', '.join(missing)}")
        tokens = {str(k): int(v) for k, v in load_pickle_dict(files["token_ids"]).items()}
        medians = {str(k): float(v) for k, v in load_pickle_dict(files["medians"]).items()}
        symbols = {}
        if files["symbols"].is_file():
            symbols = {str(k).upper(): str(v) for k, v in load_pickle_dict(files["symbols"]).items()}
        mapping = load_pickle_dict(files["mapping"]) if files["mapping"].is_file() else None
        return cls(family, tokens, medians, symbols, mapping)

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
    genes_dropped: int = 0  # input gene columns that reach no vocabulary gene (see Encoder.columns)


def check_counts(values: np.ndarray) -> None:
    if values.size == 0:
        return
    if not np.isfinite(values).all():
        raise TokenizerError("counts contain NaN or infinite values")
    if (values < 0).any():
        raise TokenizerError("counts contain negative values")
    if not np.allclose(values, np.round(values)):
        raise TokenizerError("counts are not integers: raw counts are needed (not normalised or log data)")


VERSION_SUFFIX = re.compile(r"^(ENS[A-Z]*\d+)\.\d+$", re.IGNORECASE)  # ENSG00000141510.17
EMPTY_IDS = {"", "NAN", "NONE"}


class Encoder:
    """The rank-value encoder for one gene list: the ID mapping, the column merge, the vocabulary
    genes' token ids and medians are worked out once, then any number of row chunks are encoded.
    ``columns`` counts what happened to the input's gene columns, by reason."""

    def __init__(
        self,
        ensembl_ids: list[str],
        variant: Variant,
        dicts: Dictionaries,
        max_len: int | None = None,
        map_genes: bool = True,
        recompute_n_counts: bool = False,
    ):
        import scipy.sparse as sp

        dicts.check_variant(variant)
        self.variant = variant
        self.recompute_n_counts = recompute_n_counts
        self.n_input_genes = len(ensembl_ids)
        max_len = min(max_len or variant.context, variant.context)
        self.n_genes = max_len - (2 if variant.has_cls_eos else 0)
        raw = [str(g).strip() for g in ensembl_ids]
        ids = [VERSION_SUFFIX.sub(r"\1", g) for g in raw]
        if map_genes:
            targets = [dicts.mapping.get(g.upper()) for g in ids]
        else:
            targets = [g if g in dicts.token_ids and not g.startswith("<") else None for g in ids]
        reasons = Counter()
        for g, t in zip(ids, targets):
            if g.upper() in EMPTY_IDS:
                reasons["dropped_empty_id"] += 1
            elif t is None:
                reasons["dropped_not_in_vocabulary"] += 1
            elif t not in dicts.medians:
                reasons["dropped_no_median"] += 1
        used = [t if t is not None and t in dicts.medians else None for t in targets]
        genes = sorted({t for t in used if t is not None})
        column = {g: j for j, g in enumerate(genes)}
        rows = [i for i, t in enumerate(used) if t is not None]
        # one matrix maps every kept input column onto its gene, summing the columns that share one
        self.merge = sp.csr_matrix(
            (np.ones(len(rows)), (rows, [column[used[i]] for i in rows])), shape=(len(ids), len(genes))
        )
        self.genes = genes  # the vocabulary genes used (Ensembl IDs), in token-column order
        self.first_column = {used[i]: i for i in reversed(rows)}  # each gene's first input column
        self.tokens = np.array([dicts.token_ids[g] for g in genes], dtype=np.int64)
        self.medians = np.array([dicts.medians[g] for g in genes], dtype=np.float64)
        self.columns = {
            "input": len(ids),
            "used": len(rows),
            "genes": len(genes),
            "dropped_empty_id": 0,
            "dropped_not_in_vocabulary": 0,
            "dropped_no_median": 0,
            **reasons,
            "mapped_to_another_id": sum(used[i] != ids[i] for i in rows),
            "summed_into_another_column": len(rows) - len(genes),
            "version_suffix_stripped": sum(a != b for a, b in zip(raw, ids)),
        }
        self.genes_dropped = len(ids) - len(rows)

    def encode(
        self, counts, n_counts: np.ndarray | None = None, first_row: int = 0, names: list[str] | None = None
    ) -> Tokenized:
        """Encode a cells × genes chunk (dense or sparse); rows are numbered from ``first_row``
        (``names``: the cells' obs names, for error messages)."""
        import scipy.sparse as sp

        X = sp.csr_matrix(counts, dtype=np.float64)
        check_counts(X.data)
        if X.shape[1] != self.n_input_genes:
            raise TokenizerError(f"{X.shape[1]} genes in the matrix but {self.n_input_genes} gene ids")
        row_sums = np.asarray(X.sum(axis=1)).ravel()
        if n_counts is None or self.recompute_n_counts:
            totals = row_sums
        else:
            totals = np.asarray(n_counts, dtype=np.float64)
            check_n_counts(totals, row_sums, first_row, names)
        X = (X @ self.merge).tocsr()
        v = self.variant
        out = Tokenized([], [], genes_dropped=self.genes_dropped)
        for row in range(X.shape[0]):
            start, end = X.indptr[row], X.indptr[row + 1]
            cols, vals = X.indices[start:end], X.data[start:end]
            keep = vals > 0
            cols, vals = cols[keep], vals[keep]
            if cols.size == 0 or totals[row] <= 0:
                out.empty_cells.append(first_row + row)
                continue
            score = vals / totals[row] * TARGET_SUM / self.medians[cols]
            order = np.lexsort((self.tokens[cols], -score))  # by score descending, ties by token id
            ranked = self.tokens[cols][order][: self.n_genes].tolist()
            if v.has_cls_eos:
                ranked = [v.special_tokens["<cls>"], *ranked, v.special_tokens["<eos>"]]
            out.cells.append(ranked)
            out.cell_index.append(first_row + row)
        return out


def check_n_counts(totals: np.ndarray, row_sums: np.ndarray, first_row: int = 0, names=None) -> None:
    """``obs['n_counts']`` is every cell's divisor: NaN, a negative value, or zero for a cell that
    has counts would rank its genes by nothing meaningful, so it is refused with the cell named."""
    bad = ~np.isfinite(totals) | (totals < 0) | ((totals == 0) & (row_sums > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        who = f"obs name {names[i]!r}" if names is not None else f"row {first_row + i}"
        raise TokenizerError(
            f"obs['n_counts'] is {totals[i]!r} for the cell with {who} ({int(bad.sum())} such cells in this chunk): "
            "fix the column, or pass --recompute-n-counts to use each cell's row sum"
        )


def tokenize_counts(
    counts,
    ensembl_ids: list[str],
    variant: Variant,
    dicts: Dictionaries,
    max_len: int | None = None,
    n_counts: np.ndarray | None = None,
    map_genes: bool = True,
) -> Tokenized:
    """Encode a whole cells × genes count matrix (dense or scipy sparse)."""
    return Encoder(ensembl_ids, variant, dicts, max_len, map_genes).encode(counts, n_counts)


def gene_ids(var, gene_column: str | None, dicts: Dictionaries) -> list[str]:
    """Ensembl IDs of the genes: ``var[gene_column]`` (default: an ``ensembl_id`` column when there
    is one), else the var names when they are Ensembl IDs, else the var names mapped from symbols
    through the family's gene-name dictionary."""
    if gene_column is None and "ensembl_id" in var:
        gene_column = "ensembl_id"
    if gene_column:
        if gene_column not in var:
            raise TokenizerError(
                f"var has no {gene_column!r} column (columns: {', '.join(map(str, var.columns)) or 'none'})"
            )
        return [str(g) for g in var[gene_column]]
    names = [str(n) for n in var.index]
    if names and sum(n.upper().startswith("ENS") for n in names) > len(names) / 2:
        return names  # Ensembl IDs (version suffixes are stripped by the Encoder)
    if not dicts.symbols and not any(n.upper() in dicts.mapping for n in names):
        raise TokenizerError("genes have no Ensembl IDs and no gene-name dictionary is available to map symbols")
    mapped = [dicts.symbols.get(n.upper(), n) for n in names]  # unknown symbols may still be in the mapping
    if not any(m in dicts.mapping or m.upper() in dicts.mapping for m in mapped):
        raise TokenizerError("genes have no Ensembl IDs and none of their names is a known gene symbol")
    return mapped


def open_anndata(path: str | Path):
    """An AnnData opened lazily (.h5ad backed; .loom read through anndata), with clear errors."""
    import anndata

    path = Path(path)
    if path.is_dir():
        raise TokenizerError(f"{path} is a folder; give an .h5ad or .loom file of raw counts")
    if not path.is_file():
        raise TokenizerError(f"{path} does not exist")
    try:
        if path.suffix == ".loom":  # loom has no backed mode in anndata: read whole (needs loompy)
            from anndata.io import read_loom

            adata = read_loom(path)
        else:
            adata = anndata.read_h5ad(path, backed="r")
    except Exception as exc:
        raise TokenizerError(f"cannot read {path} as AnnData: {type(exc).__name__}: {exc}") from exc
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise TokenizerError(f"{path} holds no cells or no genes ({adata.n_obs} × {adata.n_vars})")
    return adata


def tokenize_h5ad(
    path: str | Path,
    variant: Variant,
    dicts: Dictionaries,
    max_len: int | None = None,
    gene_column: str | None = None,
    layer: str | None = None,
    max_cells: int | None = None,
) -> Tokenized:
    """Encode (the first ``max_cells`` cells of) an AnnData file in memory."""
    adata = open_anndata(path)
    rows = slice(0, max_cells) if max_cells else slice(None)
    X = adata.layers[layer][rows] if layer else adata.X[rows]
    n_counts = adata.obs["n_counts"].to_numpy()[rows] if "n_counts" in adata.obs else None
    encoder = Encoder(gene_ids(adata.var, gene_column, dicts), variant, dicts, max_len)
    return encoder.encode(X, n_counts)
