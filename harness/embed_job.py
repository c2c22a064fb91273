"""``gfqual embed`` as one job, shared by the command line and the Python API (``harness.api.embed``):
a tokenized dataset in, embeddings out (file and/or AnnData), resumable.

Resume, as tokenize does: with an output file, cells are embedded in pieces of ``PIECE_CELLS``
(consecutive, in input order) and each finished piece is kept in ``OUT.partial/``; Ctrl-C or
SIGTERM stops with one line saying how much is kept, and the same command carries on from the
first unfinished piece. Settings that would change the numbers (variant, weights, backend,
precision, mode, layer, token budget, the dataset itself) must match, or the pieces are refused.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.outputs import Interrupted, written
from models.errors import UsageError

PIECE_CELLS = 8192  # cells per piece a resume keeps: a few seconds of GPU work, minutes on a CPU
MANIFEST = "_manifest.json"


@dataclass
class EmbedRun:
    """What one embed job made and measured (the CLI prints it and writes its perf record)."""

    embeddings: object  # harness.embeddings.Embeddings
    table: object  # the tokenized cells (pandas DataFrame), input order
    genes: object  # the dataset's gene table, or None
    info: dict
    backend: object
    budget: int
    cells_run: int  # cells embedded by this run (a resume skips the finished pieces)
    tokens_run: int
    seconds: float
    startup: float
    startup_parts: dict = field(default_factory=dict)
    gpu_util: float | None = None
    weights: dict = field(default_factory=dict)

    def anndata(self):
        from harness.embeddings import embeddings_anndata

        return embeddings_anndata(self.embeddings, self.table, self.info, self.genes)


def run_embed(
    tokens: str | Path,
    variant,
    checkpoint: str | None = None,
    seed: int = 0,
    backend: str = "auto",
    precision: str = "auto",
    mode: str = "cell",
    layer: int = -1,
    max_tokens: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    piece_cells: int | None = None,
) -> EmbedRun:
    """Embed the tokenized dataset at ``tokens``; with ``out`` (.h5ad or .parquet), write it there,
    resumably. ``progress``: a bar on stderr (shown only on a terminal)."""
    from harness import STARTED
    from harness.backends import build_backend
    from harness.cli.common import model_source
    from harness.data.stream import read_gene_table, read_tokenized
    from harness.distributed import barrier, context
    from harness.embeddings import embed_defaults, extract, save_embeddings, token_budget
    from harness.perf.telemetry import Telemetry
    from harness.precision import get_precision
    from harness.progress import progress_bar

    ctx = context()  # under torchrun: join the group and take this rank's GPU before building
    piece_cells = piece_cells or PIECE_CELLS
    with ThreadPoolExecutor(1) as drawing:  # random weights are drawn (no GIL held) while TE imports
        weights_ready = drawing.submit(model_source, checkpoint, variant, seed)
        backend_name, precision = embed_defaults(backend, precision)
        marks = [("imports_s", time.perf_counter())]  # start-up, by part: where the seconds before the first batch go
        table = read_tokenized(tokens, variant)
        cells = [np.asarray(ids, dtype=np.int64) for ids in table["input_ids"]]
        marks.append(("data_s", time.perf_counter()))
        source, weights = weights_ready.result()
    marks.append(("weights_s", time.perf_counter()))  # what is left of drawing them once the data is read
    model = build_backend(backend_name, source, get_precision(precision))
    marks.append(("build_s", time.perf_counter()))
    budget = token_budget(model, variant, max_tokens)
    options = dict(mode=mode, emb_layer=layer, max_tokens=budget)
    extract(model, cells[:2], variant, **options)  # CUDA context, kernels loaded, FP8 scales calibrated
    barrier()
    marks.append(("warmup_s", time.perf_counter()))
    startup = marks[-1][1] - STARTED
    parts = {name: t - before for (name, t), before in zip(marks, [STARTED] + [t for _, t in marks])}
    info = {
        "variant": variant.name,
        "backend": backend_name,
        "precision": precision,
        "layer": layer,
        "weights": weights.get("source", "checkpoint"),
    }
    identity = {
        **info,
        "mode": mode,
        "weights": weights,
        "max_tokens": budget,
        "tokens": str(Path(tokens).resolve()),
        "input_sha256": json.loads((Path(tokens) / "_summary.json").read_text()).get("head_sha256"),
        "cells": len(cells),
        "piece_cells": piece_cells,
    }
    identity = json.loads(json.dumps(identity, default=str))  # as the manifest reads back
    work = Path(f"{out}.partial") if out is not None else None
    with progress_bar(len(cells), "embedding", not progress) as bar, Telemetry() as telemetry:
        start = time.perf_counter()
        emb, ran = _in_pieces(model, cells, variant, options, work, identity, piece_cells, bar.update)
        seconds = time.perf_counter() - start
    genes = read_gene_table(tokens)
    if out is not None and ctx.is_main:
        save_embeddings(emb, table, out, info, genes)
        shutil.rmtree(work, ignore_errors=True)
    return EmbedRun(
        emb,
        table,
        genes,
        info,
        model,
        budget,
        cells_run=len(ran),
        tokens_run=sum(len(cells[i]) for i in ran),
        seconds=seconds,
        startup=startup,
        startup_parts=parts,
        gpu_util=telemetry.summary().get("gpu_util"),
        weights=weights,
    )


def _in_pieces(model, cells, variant, options, work, identity, piece_cells, progress):
    """``extract`` over consecutive pieces of ``cells``, each finished piece kept in ``work`` (when
    given) and taken from there on a resume; returns the embeddings and the cells run now."""
    from harness.distributed import barrier, context
    from harness.embeddings import cell_embedding_stage, extract

    if work is None:
        return extract(model, cells, variant, progress=progress, **options), range(len(cells))
    ctx = context()
    manifest = work / MANIFEST
    resuming = work.exists()
    done = {p.name for p in work.glob("piece-*.npz")} if resuming else set()
    barrier()  # every rank decides from the same listing, taken before this run writes anything
    if resuming:
        kept = json.loads(manifest.read_text()) if manifest.is_file() else None
        if kept != identity:
            raise UsageError(
                f"{work} holds an unfinished embed run with other settings or of another dataset; "
                "remove it to start over, or rerun the command that made it"
            )
    elif ctx.is_main:
        work.mkdir()
        manifest.write_text(json.dumps(identity, indent=1, sort_keys=True))
    pieces, ran = [], []
    starts = range(0, len(cells), piece_cells)
    stage = cell_embedding_stage(variant.num_hidden_layers, options["emb_layer"])
    try:
        for k, start in enumerate(starts):
            name, chunk = f"piece-{k:06d}.npz", cells[start : start + piece_cells]
            if name in done:
                pieces.append(_load_piece(work / name, options["mode"], stage))
                progress(len(chunk))
                continue
            emb = extract(model, chunk, variant, progress=progress, **options)
            if ctx.is_main:
                with written(work / name) as tmp, open(tmp, "wb") as fh:
                    np.savez(
                        fh, vectors=emb.vectors, tokens=_or_empty(emb.gene_tokens), counts=_or_empty(emb.gene_counts)
                    )
            pieces.append(emb)
            ran += range(start, start + len(chunk))
    except KeyboardInterrupt:
        finished = min(len(cells), len(pieces) * piece_cells)
        raise Interrupted(
            f"interrupted; {work} keeps {finished} of {len(cells)} cells: run the same command to resume"
        ) from None
    return _joined(pieces), ran


def _or_empty(values):
    return np.zeros(0, dtype=np.int64) if values is None else values


def _load_piece(path: Path, mode: str, stage: str):
    from harness.embeddings import Embeddings

    with np.load(path) as piece:
        if mode == "gene":
            return Embeddings(mode, stage, piece["vectors"], piece["tokens"], piece["counts"])
        return Embeddings(mode, stage, piece["vectors"])


def _joined(pieces: list):
    """One Embeddings from consecutive pieces: cell rows in order; a gene's vector the mean over
    every position it held in any piece (the pieces' means weighted by their counts)."""
    from harness.embeddings import Embeddings

    first = pieces[0]
    if len(pieces) == 1:
        return first
    if first.mode != "gene":
        return Embeddings(first.mode, first.layer_stage, np.concatenate([p.vectors for p in pieces]))
    tokens = np.unique(np.concatenate([p.gene_tokens for p in pieces]))
    sums = np.zeros((len(tokens), first.vectors.shape[1]))
    counts = np.zeros(len(tokens), dtype=np.int64)
    for p in pieces:
        rows = np.searchsorted(tokens, p.gene_tokens)
        sums[rows] += p.vectors.astype(np.float64) * p.gene_counts[:, None]
        counts[rows] += p.gene_counts
    return Embeddings("gene", first.layer_stage, (sums / counts[:, None]).astype(np.float32), tokens, counts)
