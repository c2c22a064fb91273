"""Tokenize an AnnData file larger than memory into a Parquet dataset, in chunks, resumably.

The file is opened backed (rows are read from disk a chunk at a time). Each chunk becomes one
``part-NNNNNN.parquet`` (``input_ids`` as a list of ints, ``length``, ``cell_index``, ``cell_id``
(the input's obs_names: barcodes a user joins results back on) and the chosen obs columns). Work
happens in ``OUT.partial/``: an interrupted run (Ctrl-C, SIGTERM, a killed job) leaves it there
and the same command resumes after the last finished chunk; bad data removes it, so no partial
output is ever left looking like a result. ``OUT/_summary.json`` says what was done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from harness.data.tokenizer import Dictionaries, Encoder, TokenizerError, gene_ids, open_anndata
from harness.outputs import Interrupted
from harness.progress import progress_bar
from models.registry import Variant

MANIFEST = "_manifest.json"
SUMMARY = "_summary.json"
COLUMNS = ("input_ids", "length", "cell_index")  # what every tokenized dataset holds
CELL_ID = "cell_id"  # the input's obs_names, carried by default
GENES = "_genes.parquet"  # token id -> Ensembl ID and symbol (a leading _: not read as cells)
SYMBOL_COLUMNS = ("gene_symbols", "feature_name", "gene_name", "symbol")  # where var keeps symbols


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _fingerprint(path: Path) -> dict:
    """What a resume must find unchanged: size, modification time and a hash of the first MiB (an
    input edited in place at the same size is not the input the finished chunks came from)."""
    import hashlib

    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(1 << 20)).hexdigest()
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


def _same_vocabulary(variant: Variant) -> set[str]:
    from models.registry import VARIANTS

    return {v.name for v in VARIANTS.values() if v.dictionary_family == variant.dictionary_family}


def tokenize_to_parquet(
    source: str | Path,
    variant: Variant,
    dicts: Dictionaries,
    out: str | Path,
    chunk_size: int = 2048,
    gene_column: str | None = None,
    layer: str | None = None,
    obs_columns: tuple[str, ...] = (),
    filter_pass: bool = True,
    max_len: int | None = None,
    progress: bool = True,
    map_genes: bool = True,
    recompute_n_counts: bool = False,
) -> dict:
    """``progress``: a bar on stderr (shown only on a terminal)."""
    import pandas as pd

    source, out = Path(source), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TokenizerError(f"{out} already exists; choose a new output path")
    adata = open_anndata(source)
    obs_columns = tuple(c for c in obs_columns if c != CELL_ID or c in adata.obs)  # cell_id: the obs_names
    missing = [c for c in obs_columns if c not in adata.obs]
    if missing:
        raise TokenizerError(f"{source}: obs has no column(s) {', '.join(missing)}")
    if layer is not None and layer not in adata.layers:
        raise TokenizerError(f"{source}: no layer {layer!r} (layers: {', '.join(adata.layers) or 'none'})")
    encoder = Encoder(gene_ids(adata.var, gene_column, dicts), variant, dicts, max_len, map_genes, recompute_n_counts)
    identity = {
        "source": str(source.resolve()),
        **_fingerprint(source),
        "variant": variant.name,
        "chunk_size": chunk_size,
        "layer": layer,
        "gene_column": gene_column,
        "max_len": max_len,
        "obs_columns": list(obs_columns),
        "filter_pass": filter_pass,
        "map_genes": map_genes,
        "recompute_n_counts": recompute_n_counts,
        "cell_ids": True,
    }
    work = out.with_name(out.name + ".partial")
    manifest = {"identity": identity, "chunks": {}}
    if work.exists():
        previous = json.loads((work / MANIFEST).read_text()) if (work / MANIFEST).is_file() else {}
        if previous.get("identity") != identity:
            raise TokenizerError(
                f"{work} holds an unfinished run with other settings or of another version of the "
                "input (size, modification time, first MiB); remove it to start over"
            )
        manifest = previous
    work.mkdir(parents=True, exist_ok=True)

    passes = None
    if filter_pass and "filter_pass" in adata.obs:
        passes = adata.obs["filter_pass"].to_numpy().astype(bool)
    n_counts = adata.obs["n_counts"].to_numpy(dtype=float) if "n_counts" in adata.obs else None
    obs_names = np.asarray(adata.obs_names)
    matrix = adata.layers[layer] if layer else adata.X
    starts = range(0, adata.n_obs, chunk_size)
    start_time, encoded_now = time.perf_counter(), 0
    try:
        with progress_bar(adata.n_obs, f"tokenizing {source.name}", quiet=not progress) as bar:
            for start in starts:
                key = str(start // chunk_size)
                stop = min(start + chunk_size, adata.n_obs)
                bar.update(stop - start)
                if key in manifest["chunks"]:
                    continue  # finished in an earlier run
                rows = np.arange(start, stop)
                if passes is not None:
                    rows = rows[passes[start:stop]]
                block = matrix[start:stop][rows - start] if len(rows) else None
                names = [str(n) for n in obs_names[rows]]
                tok = (
                    encoder.encode(block, None if n_counts is None else n_counts[rows], names=names)
                    if len(rows)
                    else None
                )
                kept = [int(rows[i]) for i in (tok.cell_index if tok else [])]
                frame = pd.DataFrame(
                    {
                        "input_ids": tok.cells if tok else [],
                        "length": [len(c) for c in tok.cells] if tok else [],
                        "cell_index": kept,
                        CELL_ID: [str(n) for n in obs_names[kept]],
                    }
                )
                for col in obs_columns:
                    frame[col] = adata.obs[col].to_numpy()[kept]
                part = work / f"part-{int(key):06d}.parquet"
                frame.to_parquet(part.with_suffix(".tmp"), index=False)
                os.replace(part.with_suffix(".tmp"), part)
                empty = [int(rows[i]) for i in tok.empty_cells] if tok else []
                manifest["chunks"][key] = {
                    "cells": len(kept),
                    "empty_cells": empty,
                    "filtered_out": (stop - start) - len(rows),
                }
                _write_json(work / MANIFEST, manifest)
                encoded_now += stop - start
        if not sum(c["cells"] for c in manifest["chunks"].values()):
            raise TokenizerError(f"{source}: no cell was tokenized: {_likeliest_cause(encoder, manifest, passes)}")
    except KeyboardInterrupt:
        for tmp in work.glob("*.tmp"):
            tmp.unlink()  # the chunk in flight: its parquet is not in the manifest
        raise Interrupted(f"interrupted; {work} keeps the finished chunks: run the same command to resume") from None
    except TokenizerError as exc:
        shutil.rmtree(work, ignore_errors=True)  # bad data: leave nothing that looks like output
        raise TokenizerError(f"{exc}{_layer_hint(adata, layer, exc)}") from None
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start_time
    chunks = manifest["chunks"].values()
    summary = {
        **identity,
        "cells": sum(c["cells"] for c in chunks),
        "empty_cells": sum(len(c["empty_cells"]) for c in chunks),
        "empty_cell_rows": [r for c in chunks for r in c["empty_cells"]][:1000],
        "filtered_out": sum(c["filtered_out"] for c in chunks),
        "gene_columns": encoder.columns,
        "genes_in_input": encoder.n_input_genes,
        "seconds_this_run": seconds,
        "cells_per_s_this_run": encoded_now / seconds if seconds > 0 and encoded_now else None,
    }
    gene_table(encoder, adata.var, dicts).to_parquet(work / GENES, index=False)
    _write_json(work / SUMMARY, summary)
    (work / MANIFEST).unlink()
    os.replace(work, out)
    return summary


def gene_table(encoder: Encoder, var, dicts: Dictionaries):
    """Every vocabulary gene the dataset's tokens can hold: token id, Ensembl ID and symbol (from
    the input: its var names when they are symbols, else a symbol column; else the dictionary's)."""
    import pandas as pd

    names = [str(n) for n in var.index]
    if sum(n.upper().startswith("ENS") for n in names) > len(names) / 2:
        column = next((c for c in SYMBOL_COLUMNS if c in var), None)
        names = [str(n) for n in var[column]] if column else [""] * len(names)
    from_dictionary = {ensembl: symbol for symbol, ensembl in dicts.symbols.items()}
    symbols = [names[encoder.first_column[g]] or from_dictionary.get(g, "") for g in encoder.genes]
    return pd.DataFrame({"token_id": encoder.tokens, "ensembl_id": encoder.genes, "symbol": symbols})


def read_gene_table(path: str | Path):
    """The tokenized dataset's gene table (``gene_table``), or None for a dataset made before it."""
    import pandas as pd

    file = Path(path) / GENES
    return pd.read_parquet(file) if file.is_file() else None


def _layer_hint(adata, layer: str | None, exc: Exception) -> str:
    """Counts that are not integers in X, when the file keeps other layers: name them (raw counts
    often sit in ``layers['counts']`` beside a normalised X)."""
    if layer is not None or "not integers" not in str(exc) or not len(adata.layers):
        return ""
    names = list(adata.layers)
    best = next((n for n in names if "count" in n.lower()), names[0])
    return f"; this file also has layers {', '.join(names)}: if {best!r} holds the raw counts, pass --layer {best}"


def _likeliest_cause(encoder: Encoder, manifest: dict, passes) -> str:
    """Why a file gave no cell, in the order a user would check."""
    cols = encoder.columns
    if not cols["used"]:
        return (
            f"none of its {cols['input']} gene columns reaches the {encoder.variant.dictionary_family} vocabulary "
            f"({cols['dropped_empty_id']} empty IDs, {cols['dropped_not_in_vocabulary']} not in the vocabulary): "
            "check var['ensembl_id'] (or --gene-column) holds Ensembl IDs"
        )
    if passes is not None and not passes.any():
        return "obs['filter_pass'] is 0 for every cell (or pass --no-filter-pass)"
    return (
        f"every cell is empty: none has counts on the {cols['used']} gene columns in the vocabulary "
        "(is the matrix in --layer, and are these raw counts?)"
    )


def read_tokenized(path: str | Path, variant: Variant | None = None):
    """The tokenized dataset as a DataFrame, in input order; with ``variant``, refuse a dataset
    tokenized for another one (V1 tokens mean other genes than V2 tokens)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"{path} does not exist; give the output folder of gfqual tokenize")
    if not path.is_dir() or not (path / SUMMARY).is_file():
        partial = path.with_name(path.name + ".partial")
        hint = f" ({partial} is unfinished: rerun gfqual tokenize to finish it)" if partial.is_dir() else ""
        raise TokenizerError(f"{path} is not a finished tokenized dataset (no {SUMMARY}){hint}")
    made_for = json.loads((path / SUMMARY).read_text())["variant"]
    if variant is not None and made_for != variant.name and made_for not in _same_vocabulary(variant):
        raise TokenizerError(
            f"{path} was tokenized for {made_for}; {variant.name} needs {variant.dictionary_family} tokens: "
            f"tokenize the cells again for {variant.name}"
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise TokenizerError(f"{path}: cannot read its parquet files: {type(exc).__name__}: {exc}") from exc
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise TokenizerError(
            f"{path}: its parquet files lack column(s) {', '.join(missing)}: not a gfqual tokenize dataset; "
            "tokenize the cells again"
        )
    return frame.sort_values("cell_index", kind="stable").reset_index(drop=True)
