"""The inputs of the downstream tasks: the user's files, or synthetic data with a planted signal.

Gene task (dosage sensitivity): tokenized cells, gene labels, and the token id of each labelled
gene. Cell task (cardiomyopathy): tokenized cells, a class per cell and the individual it came
from. Offline defaults are synthetic, labelled as such, so the pipeline runs on a fresh machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.downstream.dosage import GeneLabels, load_labels
from models.errors import UsageError
from models.registry import Variant

CARDIOMYOPATHY_CLASSES = ("non-failing", "hypertrophic", "dilated")
SYNTHETIC_MARKER_GENES = 40  # per class, in the synthetic cardiomyopathy task


@dataclass
class GeneTaskData:
    cells: list[list[int]]
    labels: GeneLabels
    token_ids: dict[str, int]
    source: str  # what the cells and labels are, for the results file


@dataclass
class CellTaskData:
    cells: list[list[int]]
    y: np.ndarray  # class index per cell
    classes: list[str]
    individuals: np.ndarray
    source: str


def _dictionaries(dicts: str | None, variant: Variant):
    from harness.data.dictionaries import resolve_dictionaries

    if dicts is None:
        raise UsageError("--dicts (the Geneformer dictionary folder) is needed to tokenize a real .h5ad")
    return resolve_dictionaries(dicts, variant)


def _encode(adata, variant: Variant, dicts, max_len: int | None, max_cells: int | None = None):
    """Rank-value encode the first ``max_cells`` cells (all by default) of an in-memory or
    backed AnnData; ``Tokenized.cell_index`` says which rows became cells."""
    from harness.data.tokenizer import Encoder, gene_ids

    rows = slice(0, max_cells)
    n_counts = adata.obs["n_counts"].to_numpy()[rows] if "n_counts" in adata.obs else None
    return Encoder(gene_ids(adata.var, None, dicts), variant, dicts, max_len).encode(adata.X[rows], n_counts)


def gene_task_data(
    variant: Variant,
    h5ad: str | None = None,
    dicts: str | None = None,
    labels: str | None = None,
    max_len: int | None = None,
    max_cells: int | None = None,
    seed: int = 0,
) -> GeneTaskData:
    from harness.data.synthetic import synthetic_anndata, synthetic_dictionaries
    from harness.data.tokenizer import open_anndata

    if h5ad is None:
        if labels is not None:
            raise UsageError("--labels needs the cells they refer to: pass --h5ad and --dicts too")
        d = synthetic_dictionaries(variant, seed)
        adata = synthetic_anndata(d, n_cells=max_cells or 120, n_genes=3000, seed=seed, labelled_genes=(100, 300))
        planted = adata.uns["synthetic"]["gene_labels"]
        gene_labels = GeneLabels(
            list(planted["positive"]) + list(planted["negative"]),
            np.array([1] * len(planted["positive"]) + [0] * len(planted["negative"])),
        )
        source = (
            f"synthetic: {adata.n_obs} cells; 100 'sensitive' genes planted at the top ranks, "
            f"300 'insensitive' genes further down (seed {seed})"
        )
        return GeneTaskData(_encode(adata, variant, d, max_len).cells, gene_labels, d.token_ids, source)
    if labels is None:
        raise UsageError("--labels (the dosage-sensitivity CSV) is needed with --h5ad")
    d = _dictionaries(dicts, variant)
    tok = _encode(open_anndata(h5ad), variant, d, max_len, max_cells)
    return GeneTaskData(
        tok.cells,
        load_labels(labels),
        d.token_ids,
        f"{Path(h5ad).name} ({len(tok.cells)} cells) with labels {Path(labels).name}",
    )


def cell_task_data(
    variant: Variant,
    h5ad: str | None = None,
    dicts: str | None = None,
    label_column: str = "disease",
    individual_column: str = "individual",
    max_len: int | None = None,
    max_cells: int | None = None,
    seed: int = 0,
) -> CellTaskData:
    from harness.data.synthetic import synthetic_anndata, synthetic_dictionaries
    from harness.data.tokenizer import open_anndata

    if h5ad is None:
        d = synthetic_dictionaries(variant, seed)
        n = max_cells or 180
        # 40 marker genes per class: enough for a probe on random-weight embeddings to find, few
        # enough that HF fp32 stays well below a perfect score (V1-10M, 180 cells, full context:
        # accuracy 0.88, 0.78, 0.85 for seeds 0-2; with 200 genes every run scored 1.0, so an
        # HF-vs-TE difference could not show)
        adata = synthetic_anndata(
            d,
            n_cells=n,
            n_genes=3000,
            program_size=SYNTHETIC_MARKER_GENES,
            exclusive=True,
            seed=seed,
            state_names=CARDIOMYOPATHY_CLASSES,
        )
        # in the real study each donor has one diagnosis: 4 donors per class
        state = adata.obs["cell_state"].to_numpy()
        adata.obs["individual"] = [f"{s}_donor_{i % 4}" for i, s in enumerate(state)]
        label_column, individual_column = "cell_state", "individual"
        source = (
            f"synthetic: {n} cells of 12 donors, 3 classes named after the cardiomyopathy states, "
            f"each with a planted program of {SYNTHETIC_MARKER_GENES} marker genes (seed {seed})"
        )
    else:
        d = _dictionaries(dicts, variant)
        adata = open_anndata(h5ad)
        source = f"{Path(h5ad).name}: classes from obs['{label_column}'], split by obs['{individual_column}']"
    missing = [c for c in (label_column, individual_column) if c not in adata.obs]
    if missing:
        raise UsageError(
            f"{h5ad}: obs has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, adata.obs.columns))})"
        )
    tok = _encode(adata, variant, d, max_len, max_cells if h5ad is not None else None)
    labels = adata.obs[label_column].astype(str).to_numpy()[tok.cell_index]
    classes = sorted(
        set(labels), key=lambda c: (CARDIOMYOPATHY_CLASSES.index(c) if c in CARDIOMYOPATHY_CLASSES else 99, c)
    )
    if len(classes) < 2:
        raise UsageError(f"obs['{label_column}'] has {len(classes)} class; a classifier needs two or more")
    y = np.array([classes.index(c) for c in labels])
    individuals = adata.obs[individual_column].astype(str).to_numpy()[tok.cell_index]
    return CellTaskData(tok.cells, y, classes, individuals, source)
