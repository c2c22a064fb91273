"""gfqual as a library, for notebooks: the same functions the command line runs (its handlers are
thin layers over these), with Python objects in and out.

    from harness import api
    tokens = api.tokenize(adata, "V1-10M")              # or a path to an .h5ad / .loom
    api.embed(adata, "V1-10M")                          # adata.obsm["X_geneformer"], in place
    cells = api.embed(tokens, "V1-10M")                 # an AnnData: obs_names = the cell ids
    check = api.parity(variant="V1-10M", backend="te-format-torch")
    check.passed, check.stages, check.result            # bool, DataFrame, the results JSON
    api.load_results("results/h200")                    # every record as a DataFrame row
    verdict = api.qualify("standard", "qual/")          # gfqual qualify: the verdict.json as a dict

Nothing here prints a verdict or exits; errors are the suite's own (``models.errors``: bad input,
cannot run here), each with a message naming the problem and the fix.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.outputs import check_output
from models.errors import UsageError

EMBEDDING_KEY = "X_geneformer"  # where scverse tools look: adata.obsm[EMBEDDING_KEY]


def _variant(variant):
    from models.registry import Variant, get_variant

    return variant if isinstance(variant, Variant) else get_variant(variant)


@dataclass
class TokenizedCells:
    """A tokenized dataset (``gfqual tokenize``'s folder): ``table`` has one row per cell, in input
    order, with ``input_ids``, ``cell_id`` (the input's obs_names) and the carried obs columns."""

    path: Path
    summary: dict
    variant: str
    _keep: object = field(default=None, repr=False)  # the temporary folder of an in-memory dataset
    _table: object = field(default=None, repr=False)

    @property
    def table(self):
        from harness.data.stream import read_tokenized

        if self._table is None:
            self._table = read_tokenized(self.path)
        return self._table

    def __len__(self) -> int:
        return int(self.summary["cells"])


def tokenize(
    adata_or_path,
    variant,
    dicts: str = "synthetic",
    out: str | os.PathLike | None = None,
    *,
    obs_columns: tuple[str, ...] = (),
    layer: str | None = None,
    gene_column: str | None = None,
    max_len: int | None = None,
    chunk_size: int = 2048,
    filter_pass: bool = True,
    map_genes: bool = True,
    recompute_n_counts: bool = False,
    progress: bool = False,
) -> TokenizedCells:
    """Rank-value tokens of an AnnData (in memory) or an .h5ad/.loom file, for ``variant``.

    ``dicts``: the Geneformer dictionary folder (gc30M/, gc104M/), or "synthetic" (offline data).
    ``out``: a new folder to keep the dataset in (resumable, as ``gfqual tokenize``); without it,
    a temporary one that lives as long as the returned object."""
    from harness.data.dictionaries import resolve_dictionaries
    from harness.data.stream import tokenize_to_parquet

    v = _variant(variant)
    keep = None
    if out is None:
        keep = tempfile.TemporaryDirectory(prefix="gfqual-tokens-")
        out = Path(keep.name) / "tokens"
    else:
        check_output(out, "new-folder", option="out")
    source = adata_or_path
    if not isinstance(adata_or_path, (str, os.PathLike)):
        if keep is None:
            keep = tempfile.TemporaryDirectory(prefix="gfqual-tokens-")
        source = Path(keep.name) / "cells.h5ad"
        adata_or_path.write_h5ad(source)  # the one tokenizer reads files, chunk by chunk
    summary = tokenize_to_parquet(
        source,
        v,
        resolve_dictionaries(dicts, v),
        out,
        chunk_size=chunk_size,
        gene_column=gene_column,
        layer=layer,
        obs_columns=tuple(obs_columns),
        filter_pass=filter_pass,
        max_len=max_len,
        progress=progress,
        map_genes=map_genes,
        recompute_n_counts=recompute_n_counts,
    )
    return TokenizedCells(Path(out), summary, v.name, keep)


def embed(
    data,
    variant,
    *,
    dicts: str = "synthetic",
    checkpoint: str | None = None,
    seed: int = 0,
    backend: str = "auto",
    precision: str = "auto",
    mode: str = "cell",
    layer: int = -1,
    max_len: int | None = None,
    max_tokens: int | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
):
    """Geneformer embeddings (``gfqual embed``).

    ``data``: an AnnData of raw counts: it is tokenized (``dicts``, ``max_len``) and its cell
    embeddings are written in place to ``adata.obsm["X_geneformer"]`` (the scanpy convention; rows
    of cells that gave no tokens are NaN), and None is returned. A ``TokenizedCells``, a tokenized
    folder or an .h5ad path: an AnnData is returned (cells: obs_names are the input's cell ids;
    ``mode="gene"``: var is keyed by Ensembl ID, with symbol and token id; the vectors in
    ``obsm``/``varm["X_geneformer"]``). ``out``: also write it (.h5ad or .parquet), resumably.
    Without ``checkpoint`` the weights are seeded random ones (no learned biology)."""
    import numpy as np

    from harness.embed_job import run_embed

    v = _variant(variant)
    if out is not None:
        check_output(out, "file", overwrite, option="out")
    in_place = not isinstance(data, (TokenizedCells, str, os.PathLike)) and mode != "gene"
    tokens = data
    if not isinstance(data, TokenizedCells) and not (isinstance(data, (str, os.PathLike)) and Path(data).is_dir()):
        tokens = tokenize(data, v, dicts, max_len=max_len)
    path = tokens.path if isinstance(tokens, TokenizedCells) else Path(tokens)
    run = run_embed(
        path,
        v,
        checkpoint=checkpoint,
        seed=seed,
        backend=backend,
        precision=precision,
        mode=mode,
        layer=layer,
        max_tokens=max_tokens,
        out=out,
        progress=progress,
    )
    if not in_place:
        return run.anndata()
    vectors = np.full((data.n_obs, run.embeddings.vectors.shape[1]), np.nan, dtype=np.float32)
    vectors[run.table["cell_index"].to_numpy()] = run.embeddings.vectors
    data.obsm[EMBEDDING_KEY] = vectors
    data.uns["geneformer"] = {**run.info, "mode": mode, "layer_stage": run.embeddings.layer_stage}
    return None


@dataclass
class ParityResult:
    """One parity check: ``passed``, the per-stage table, and ``result``: the results JSON the
    command line writes (``gfqual parity --json``), record for record."""

    result: dict
    verdict: dict
    path: Path | None = None

    @property
    def status(self) -> str:
        return self.verdict["status"]

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def stages(self):
        """One row per compared stage (embeddings, each layer, the head): error and tolerance."""
        import pandas as pd

        return pd.DataFrame([r for r in self.result["records"] if r["record"] == "stage"])


def parity(
    reference: str | os.PathLike | None = None,
    candidate: str | os.PathLike | None = None,
    *,
    variant=None,
    backend: str = "te",
    precision: str = "fp32",
    device: str | None = None,
    cells: int = 4,
    length: int | None = None,
    micro_batch: int = 2,
    seed: int = 0,
    h5ad: str | None = None,
    dicts: str | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ParityResult:
    """Layer-by-layer parity of a TE candidate against the HF reference (``gfqual parity``).

    ``reference`` (HF layout) and ``candidate`` (TE layout): checkpoint folders; without them, the
    seeded random weights of ``variant`` serve both (the conversion and the TE forward are what is
    checked). ``backend="te-format-torch"`` runs the TE layout in plain PyTorch on a CPU.
    ``out``: also write the results file (.json, or a folder)."""
    from harness.parity.run import ParitySpec, run_config, run_parity
    from harness.results import make_result, write_result
    from models.checkpoint import CheckpointError, check_variant, read_checkpoint

    check_output(out, "results", overwrite, option="out")
    if (reference is None) != (candidate is None):
        raise UsageError("parity: give both reference and candidate checkpoints, or neither (random weights)")
    if reference is None:
        from models.hf import random_hf_model
        from models.random_weights import random_weights_block

        if variant is None:
            raise UsageError("parity without checkpoints needs variant= (whose random weights to compare)")
        v = _variant(variant)
        ref_source = cand_source = random_hf_model(v, seed)
        weights = random_weights_block(seed)
    else:
        ref_source = read_checkpoint(reference, expect="hf")
        cand_source = read_checkpoint(candidate, expect="te")
        if variant is not None:
            v = _variant(variant)
        else:
            matches = ref_source.variant_candidates()
            if not matches:
                raise CheckpointError(f"{reference}: architecture matches no registered variant; pass variant=")
            v = matches[0]
        for ckpt in (ref_source, cand_source):
            check_variant(ckpt.config, v, str(ckpt.path))
        weights = {"reference": ref_source.describe(), "candidate": cand_source.describe()}
    spec = ParitySpec(
        v.name,
        backend,
        precision,
        n_cells=cells,
        max_len=length or min(v.context, 256),
        micro_batch=micro_batch,
        seed=seed,
        h5ad=h5ad,
        dicts=dicts,
    )
    records, verdict = run_parity(spec, ref_source, cand_source, device)
    result = make_result("parity", records, weights, run_config([spec]))
    path = write_result(result, out) if out is not None else None
    return ParityResult(result, next(r for r in result["records"] if r["record"] == "verdict"), path)


def load_results(path: str | os.PathLike, kind: str | None = None):
    """Every record of a results file, or of every results file under a folder, as one DataFrame:
    one row per record, with the file's kind, date, GPU, git commit and path beside it."""
    import pandas as pd

    from harness.results import read_result

    path = Path(path)
    if path.is_dir():
        files = [(read_result(p), str(p)) for p in sorted(path.rglob("*.json"))]
    elif path.is_file():
        files = [(read_result(path), str(path))]
    else:
        raise UsageError(f"{path} does not exist; give a results .json file or a folder of them")
    rows = [
        {
            "kind": result["kind"],
            "created": result["created"],
            "gpu": result["env"].get("gpu_name"),
            "git_commit": result["env"].get("git_commit"),
            "file": where,
            **record,
        }
        for result, where in files
        if kind is None or result["kind"] == kind
        for record in result["records"]
    ]
    return pd.DataFrame(rows)


def qualify(
    plan: str | os.PathLike = "cpu", out: str | os.PathLike = "qual", waivers=None, force: bool = False
) -> dict:
    """Carry out a qualification plan (a shipped plan's name or a plan JSON file) into ``out``,
    resuming what an earlier run finished, exactly as ``gfqual qualify`` does (it runs the same
    handler), and return the verdict (``verdict.json`` as a dict; ``["overall"]`` is PASS, FAIL or
    INCOMPLETE). The report is written beside it, in ``out``."""
    import json

    from harness.cli import build_parser

    argv = ["qualify", "--plan", str(plan), "--out", str(out)]
    argv += ["--waivers", str(waivers)] if waivers is not None else []
    argv += ["--force"] if force else []
    args = build_parser().parse_args(argv)
    args.func(args)
    return json.loads((Path(out) / "verdict.json").read_text())
