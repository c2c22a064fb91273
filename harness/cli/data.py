"""Data: synthetic counts (synth), rank-value tokens (tokenize), embeddings of tokenized cells (embed).

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

from harness.backend_names import BACKENDS
from harness.cli.common import (
    PRECISION_CHOICES,
    RESULTS_OUT,
    SEED_HELP,
    VARIANT_HELP,
    check_output,
    positive_int,
    write_results,
)
from models.errors import UsageError


def cmd_synth(args) -> int:
    from harness.data.dictionaries import resolve_dictionaries
    from harness.data.synthetic import check_synthetic_size, synthetic_anndata
    from harness.outputs import written
    from models.registry import get_variant

    check_output(args.out, "file", args.overwrite)
    check_synthetic_size(args.cells, args.genes)
    variant = get_variant(args.variant)
    adata = synthetic_anndata(
        resolve_dictionaries(args.dicts, variant),
        n_cells=args.cells,
        n_states=args.states,
        n_genes=args.genes,
        seed=args.seed,
    )
    with written(args.out) as tmp:  # a crash leaves no half-written file under the real name
        adata.write_h5ad(tmp)
    print(f"wrote {adata.n_obs} synthetic cells × {adata.n_vars} genes ({args.states} planted states) to {args.out}")
    return 0


def cmd_tokenize(args) -> int:
    from harness.api import tokenize
    from models.registry import get_variant

    check_output(args.out, "new-folder")
    variant = get_variant(args.variant)
    summary = tokenize(
        args.input,
        variant,
        args.dicts,
        args.out,
        chunk_size=args.chunk_size,
        gene_column=args.gene_column,
        layer=args.layer,
        obs_columns=tuple(args.obs_columns),
        filter_pass=not args.no_filter_pass,
        max_len=args.max_len,
        map_genes=not args.no_gene_mapping,
        recompute_n_counts=args.recompute_n_counts,
        progress=not args.quiet,
    ).summary
    rate, cols = summary["cells_per_s_this_run"], summary["gene_columns"]
    print(
        f"tokenized {summary['cells']} cells for {variant.name} into {args.out} "
        f"({summary['empty_cells']} empty cells skipped, {summary['filtered_out']} filtered out); "
        f"gene columns: {cols['used']} of {cols['input']} used ({cols['mapped_to_another_id']} through the ID mapping, "
        f"{cols['summed_into_another_column']} summed into another column), dropped: {cols['dropped_empty_id']} "
        f"empty ID, {cols['dropped_not_in_vocabulary']} not in the vocabulary, {cols['dropped_no_median']} no median"
        + (f"; {rate:.0f} cells/s" if rate else "")
    )
    return 0


def cmd_embed(args) -> int:
    from pathlib import Path

    from harness.capability import probe
    from harness.distributed import context
    from harness.embed_job import run_embed
    from harness.embeddings import EMBED_OUTPUTS, batch_rounding
    from models.registry import get_variant

    out = Path(args.out)
    if out.suffix not in EMBED_OUTPUTS:
        raise UsageError(f"--out {out}: write embeddings to a {' or '.join(EMBED_OUTPUTS)} file")
    check_output(args.out, "file", args.overwrite)
    check_output(args.json, "results", args.overwrite, "--json")
    variant = get_variant(args.variant)
    run = run_embed(
        args.input,
        variant,
        checkpoint=args.checkpoint,
        seed=args.seed,
        backend=args.backend,
        precision=args.precision,
        mode=args.mode,
        layer=args.layer,
        max_tokens=args.max_tokens,
        out=out,
        progress=not args.quiet,
    )
    ctx = context()
    if not ctx.is_main:
        return 0
    backend_name, precision, budget = run.info["backend"], run.info["precision"], run.budget
    cells, tokens, seconds, util = run.cells_run, run.tokens_run, run.seconds, run.gpu_util
    longest = max(map(len, run.table["input_ids"]))
    raised = f" (--max-tokens {budget} raised: a longer cell runs alone)" if longest > budget else ""
    resumed = len(run.table) - cells
    print(
        f"{cells} cells, {args.mode} embeddings of {run.embeddings.layer_stage} via {backend_name} {precision} "
        f"on {ctx.world_size} rank(s), {max(budget, longest)} tokens per batch{raised}: "
        f"{cells / seconds:.1f} cells/s, {tokens / seconds:.0f} tokens/s"
        + (f", GPU busy {util:.0f}%" if util is not None else "")
        + (f"; {resumed} cells resumed from an interrupted run" if resumed else "")
        + f"; start-up {run.startup:.1f} s; wrote {out}"
    )
    record = {
        "record": "run",
        "status": "reported",
        "variant": variant.name,
        "backend": backend_name,
        "precision": precision,
        "workload": "embed",
        "attention_backend": run.backend.attention_backend,
        "world_size": ctx.world_size,
        "launcher": "torchrun" if ctx.distributed else "one process",
        "max_tokens": budget,
        "budget_from": "--max-tokens" if args.max_tokens else "the backend's default within free GPU memory",
        "input_layout": run.backend.input_layout,
        "pad_multiple": batch_rounding(run.backend),
        "mode": args.mode,
        "cells": cells,
        "tokens": tokens,
        "seconds": seconds,
        "cells_per_s": cells / seconds,
        "tokens_per_s": tokens / seconds,
        "startup_s": run.startup,
        **{f"startup_{k}": v for k, v in run.startup_parts.items()},
        "gpu_util_mean": util,
        "device": probe().gpu_name or "cpu",
    }
    write_results(
        "perf",
        [record],
        run.weights,
        {
            "input": str(args.input),
            "layer": args.layer,
            "max_tokens": args.max_tokens,
            "backend": args.backend,
            "precision": args.precision,
        },
        args.json,
    )
    return 0


def register(sub, fmt: dict) -> None:
    p = sub.add_parser("synth", help="write a synthetic AnnData with planted cell states (offline data)", **fmt)
    p.add_argument("--variant", default="V1-10M", help=VARIANT_HELP + "; its dictionary family names the genes")
    p.add_argument("--dicts", default="synthetic", help="Geneformer dictionary folder, or 'synthetic'")
    p.add_argument("--cells", type=positive_int, default=240, help="cells")
    p.add_argument("--genes", type=positive_int, default=4000, help="genes (columns)")
    p.add_argument("--states", type=positive_int, default=3, help="planted cell states")
    p.add_argument("--seed", type=int, default=0, help="seed of the counts")
    p.add_argument("--out", required=True, help="the .h5ad to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("tokenize", help="rank-value encode an .h5ad/.loom into a Parquet dataset (resumable)", **fmt)
    p.add_argument("--input", required=True, help=".h5ad or .loom of raw counts")
    p.add_argument("--variant", required=True, help=VARIANT_HELP + "; whose dictionaries and context")
    p.add_argument("--dicts", required=True, help="Geneformer dictionary folder (gc30M/, gc104M/), or 'synthetic'")
    p.add_argument("--out", required=True, help="new dataset folder (an interrupted run resumes from OUT.partial/)")
    p.add_argument("--gene-column", help="var column of Ensembl IDs (default: ensembl_id, else var names / symbols)")
    p.add_argument("--layer", help="counts layer (default: X)")
    p.add_argument(
        "--obs-columns",
        nargs="*",
        default=[],
        help="obs columns carried into the dataset (the obs_names always are, as column cell_id)",
    )
    p.add_argument("--chunk-size", type=positive_int, default=2048, help="cells read and written per chunk")
    p.add_argument("--max-len", type=positive_int, help="tokens per cell (default: the variant's context)")
    p.add_argument("--no-filter-pass", action="store_true", help="ignore obs['filter_pass']")
    p.add_argument(
        "--no-gene-mapping",
        action="store_true",
        help="take gene IDs literally (default: upper-case and map them through the family's "
        "ensembl_mapping_dict, summing columns that map onto one gene, as Geneformer does)",
    )
    p.add_argument(
        "--recompute-n-counts",
        action="store_true",
        help="use each cell's row sum as its total, ignoring obs['n_counts']",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (none either when stderr is not a terminal)")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("embed", help="cell or gene embeddings of a tokenized dataset", **fmt)
    p.add_argument("--input", required=True, help="output folder of gfqual tokenize")
    p.add_argument("--variant", required=True, help=VARIANT_HELP)
    p.add_argument("--checkpoint", help="HF or TE checkpoint directory (default: random weights)")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument(
        "--backend", default="auto", choices=("auto", *BACKENDS), help="auto: te-packed where TE runs, else hf-sdpa"
    )
    p.add_argument(
        "--precision", default="auto", choices=["auto", *PRECISION_CHOICES], help="auto: bf16 on a GPU, fp32 on a CPU"
    )
    p.add_argument("--mode", default="cell", choices=("cell", "cls", "gene"), help="what to embed")
    p.add_argument("--layer", type=int, default=-1, help="Geneformer emb_layer: -1 second-to-last, 0 last")
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        help="tokens per batch (default: from the GPU's free memory and the model width; 16,384 on a CPU)",
    )
    p.add_argument("--out", required=True, help="embeddings file: .h5ad (obsm['X_geneformer']) or .parquet")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (and --json file)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", help=RESULTS_OUT)
    p.set_defaults(func=cmd_embed)
