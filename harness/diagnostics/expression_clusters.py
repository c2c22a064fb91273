"""Labels for the training band's classifier (issue 30) where real cells come without cell types:
k-means clusters of each cell's expression, written as ``obs['expression_cluster']`` into a copy
of the AnnData (the input is never changed). The shared real files (celltypist, chr21) carry no
annotation, and a label derived from a cell's size (genes detected) would be read off its length
alone; a cluster of normalised expression is a property of *which* genes a cell ranks high, what a
Geneformer classifier is fine-tuned to see. Clustering: counts scaled to 10,000 per cell, log1p,
the 2,000 most variable genes, 20 principal components, k-means with a fixed seed.

    python harness/diagnostics/expression_clusters.py --input CELLS.h5ad --out LABELLED.h5ad --k 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

COLUMN = "expression_cluster"


def clusters(counts, k: int, seed: int = 0) -> np.ndarray:
    """Cluster index per cell (rows of ``counts``, dense or sparse)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    x = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    x = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    genes = np.argsort(x.var(0))[::-1][:2000]
    pcs = PCA(n_components=min(20, len(genes), len(x) - 1), random_state=seed).fit_transform(x[:, genes])
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pcs)


def main(argv: list[str] | None = None) -> int:
    import anndata as ad

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help=".h5ad of raw counts")
    parser.add_argument("--out", required=True, help="new .h5ad: the input with obs['expression_cluster']")
    parser.add_argument("--k", type=int, default=4, help="clusters")
    args = parser.parse_args(argv)
    if Path(args.out).exists():
        print(f"{args.out} exists: give a new path", file=sys.stderr)
        return 2
    adata = ad.read_h5ad(args.input)
    adata.obs[COLUMN] = [f"cluster{c}" for c in clusters(adata.X, args.k)]
    adata.write_h5ad(args.out)
    sizes = adata.obs[COLUMN].value_counts().sort_index()
    print(f"wrote {args.out}: {len(adata)} cells, " + ", ".join(f"{n} {c}" for c, n in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
