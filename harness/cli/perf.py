"""Performance: sweeps and workloads (bench), kernel profiles (profile), the regression gate (perf-gate).

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

import sys

from harness.backend_names import BACKENDS, FORWARDS
from harness.cli.common import (
    PRECISION_CHOICES,
    RESULTS_OUT,
    SEED_HELP,
    VARIANT_HELP,
    check_output,
    positive_int,
    write_results,
)
from harness.progress import row_head
from models.errors import CannotRunHere, UsageError
from models.registry import VARIANTS


def cmd_bench(args) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from harness.distributed import context
    from harness.outputs import interruptible
    from harness.perf.cpu_refusal import refuse_gpu_sweep_on_cpu
    from harness.perf.sweep import Sweep, run_sweep
    from harness.results import DEFAULT_RESULTS_DIR
    from models.random_weights import random_weights_block

    if (args.sweep is None) == (args.workload is None):
        raise UsageError("gfqual bench takes one of --sweep (kernel sweeps) or --workload (a pipeline end to end)")
    if args.workload:
        return cmd_bench_workload(args)
    ctx = context()  # under torchrun: join the group and take this rank's GPU first
    sweep = Sweep.load(args.sweep)
    if args.cells:
        sweep.cells_from = args.cells
    if args.variants:
        sweep.variants = [v for v in sweep.variants if v in args.variants]
        if not sweep.variants:
            raise UsageError(f"--variants {' '.join(args.variants)}: sweep {sweep.name} measures none of them")
    out = Path(args.out) if args.out else DEFAULT_RESULTS_DIR / f"perf-{sweep.name}.json"
    if not args.out:
        out.parent.mkdir(parents=True, exist_ok=True)  # the suite's own default folder
    check_output(out, "file")
    refuse_gpu_sweep_on_cpu(sweep, args.force)
    with interruptible(f"{out.name}.partial.jsonl keeps the measured points: run the same command to resume"):
        rows = run_sweep(sweep, out)
    write_results(
        "perf", rows, random_weights_block(sweep.seed), {"sweep": asdict(sweep), "world_size": ctx.world_size}, out
    )
    if ctx.is_main:
        out.with_name(out.name + ".partial.jsonl").unlink()
    return 0


def cmd_bench_workload(args) -> int:
    """``gfqual bench --workload embed|perturb``: the pipelines end to end (harness.perf.workload)."""
    from pathlib import Path

    from harness.capability import probe
    from harness.data.stream import read_tokenized
    from harness.perf.ceiling import matmul_tflops
    from harness.perf.cpu_refusal import refuse_long_cpu_run
    from harness.perf.workload import best_against_best, embed_workload, perturb_workload, plain_anchors, plain_loops
    from models.hf import random_hf_model
    from models.random_weights import random_weights_block
    from models.registry import get_variant

    if not args.cells:
        raise UsageError("--workload needs --cells: a tokenized dataset (gfqual tokenize) to run on")
    out = Path(args.out) if args.out else None
    check_output(args.out, "results")
    variants = [get_variant(name) for name in args.variants or ["V2-104M"]]
    pools = {v.name: list(read_tokenized(args.cells, v)["input_ids"]) for v in variants}
    cap = probe()
    runs = [(b, p) for b in args.backends for p in args.precisions if cap.skip_reason(b, p) is None]
    tokens = sum(_workload_tokens(args, pool) for pool in pools.values()) * len(runs)
    refuse_long_cpu_run(
        f"--workload {args.workload} ({len(variants)} variant(s) × {len(runs)} run(s), {tokens / 1e6:.1f} M tokens)",
        tokens,
        variants[0].name,
        args.force,
    )
    rows = []
    ceiling = matmul_tflops() if args.workload == "embed" else None
    for variant in variants:
        pool = pools[variant.name]
        n = max(args.repeat_to or len(pool), len(pool))
        cells = [pool[i % len(pool)] for i in range(n)]
        where = f"{args.cells} ({len(pool)} cells" + (f", repeated to {n})" if n > len(pool) else ")")
        source = random_hf_model(variant, args.seed)
        plain = None
        if args.workload == "embed" and not args.no_plain_loops:
            loops = plain_loops(variant, source, cells, where)
            rows += loops
            plain = plain_anchors(loops)
            for row in loops:
                if row["record"] == "plain_loop":
                    print(_plain_line(row), flush=True)
        for backend in args.backends:
            for precision in args.precisions:
                print(f"{args.workload} {variant.name} {backend} {precision}: running ...", file=sys.stderr, flush=True)
                if args.workload == "embed":
                    *calibration, row = embed_workload(
                        variant, backend, precision, cells, source, where, args.max_tokens, plain, ceiling
                    )
                    rows += calibration
                else:
                    row = perturb_workload(
                        variant,
                        backend,
                        precision,
                        pool[: args.perturb_cells],
                        source,
                        where,
                        [len(c) for c in pool],
                        max_tokens=args.max_tokens,
                    )
                rows.append(row)
                print(_workload_line(row), flush=True)
    for best in best_against_best(rows):
        print(
            f"best against best {best['variant']} {best['precision']}: {best['te']} {best['te_cells_per_s']:.0f} "
            f"cells/s ({best['te_max_tokens']} tokens) over {best['hf']} {best['hf_cells_per_s']:.0f} "
            f"({best['hf_max_tokens']}): {best['ratio']:.2f}x; at an equal budget {_ratio(best['equal_budget_ratio'])}"
        )
    write_results(
        "perf",
        rows,
        random_weights_block(args.seed),
        {"workload": args.workload, "cells": args.cells, "repeat_to": args.repeat_to, "ceiling_tflops": ceiling},
        out,
    )
    if all(
        r["status"] == "skipped" for r in rows if r["record"] == "workload"
    ):  # the plain loops alone compare nothing
        print("gfqual: nothing was measured (exit 3): every run was skipped here (reasons above)", file=sys.stderr)
        return 3
    return 0


def _workload_tokens(args, pool: list) -> int:
    """Tokens a workload runs on one variant for one backend and precision: embed runs its cells
    through the budget calibration, the pipeline and the two plain loops (about four passes); perturb
    runs each start cell once per gene."""
    lengths = [len(c) for c in pool]
    if args.workload == "embed":
        n = max(args.repeat_to or len(pool), len(pool))
        return (2 if args.no_plain_loops else 4) * sum(lengths[i % len(pool)] for i in range(n))
    return sum(length * length for length in lengths[: args.perturb_cells])


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "not measured"


def _plain_line(row: dict) -> str:
    head = f"{'plain':7s} {row_head(row)}"
    if row["status"] != "reported":
        return f"{head} {row['status'].upper()}: {row['reason']}"
    return f"{head} {row['cells']} cells: {row['cells_per_s']:.0f} cells/s, budget {row['max_tokens']}"


def _workload_line(row: dict) -> str:
    head = f"{row['workload']:7s} {row_head(row)}"
    if row["status"] != "reported":
        return f"{head} {row['status'].upper()}: {row['reason']}"
    if row["workload"] == "perturb":
        return (
            f"{head} {row['perturbations']} perturbations of {row['cells']} cells: {row['perturbations_per_s']:.0f}/s, "
            f"{row['tokens_per_s']:.0f} tokens/s; {row['projection_cells']} cells: {row['projected_hours']:.2f} h"
        )
    util, efficiency, fraction = row["gpu_util_mean"], row["pipeline_efficiency"], row["ceiling_fraction"]
    return (
        f"{head} {row['cells']} cells: {row['cells_per_s']:.0f} cells/s, {row['tokens_per_s']:.0f} tokens/s"
        + (f", {efficiency:.0%} of the plain loop" if efficiency is not None else "")
        + (f", GPU busy {util:.0f}%" if util is not None else "")
        + (f", {fraction:.0%} of the bf16 ceiling" if fraction is not None else "")
        + f", budget {row['max_tokens']} ({row['input_layout']}, multiple {row['pad_multiple']})"
    )


def cmd_profile(args) -> int:
    from harness.capability import probe
    from harness.perf.kernel_profile import format_profile, profile_point
    from harness.perf.sweep import Point
    from models.hf import random_hf_model
    from models.random_weights import random_weights_block
    from models.registry import get_variant

    check_output(args.out, "results")
    if not probe().cuda:
        raise CannotRunHere("gfqual profile: a kernel profile needs a CUDA GPU; none is visible")
    variant = get_variant(args.variant)
    seq_len = args.length or variant.context
    model = random_hf_model(variant, args.seed)
    records = []
    for backend in args.backends:
        for precision in args.precisions:
            point = Point(variant.name, backend, precision, "full", args.batch, seq_len, args.forward)
            records.append(profile_point(point, model, args.repeats, args.seed))
            print(format_profile(records[-1]))
    write_results(
        "perf", records, random_weights_block(args.seed), {"profile": vars(args) | {"func": "profile"}}, args.out
    )
    return 3 if all(r["status"] == "skipped" for r in records) else 0


def cmd_perf_gate(args) -> int:
    from harness.perf.gate import compare
    from harness.results import read_result

    rows = compare(read_result(args.baseline), read_result(args.run), args.max_slowdown)
    for r in rows:
        flag = (
            "REGRESSED" if r["regressed"] else "INCONCLUSIVE (cannot judge: too noisy)" if r["inconclusive"] else "ok"
        )
        print(
            f"{row_head(r)} {r['layout']:14s} B={r['batch']:<4} "
            f"{r['baseline_cells_per_s']:9.1f} -> {r['cells_per_s']:9.1f} cells/s ({r['ratio']:.3f}, "
            f"allowed -{r['allowed_slowdown']:.1%}) {flag}"
        )
    regressed, unjudged = sum(r["regressed"] for r in rows), sum(r["inconclusive"] for r in rows)
    print(f"{len(rows)} points compared, {regressed} regressed, {unjudged} too noisy to judge")
    return 1 if regressed or unjudged else 0


def register(sub, fmt: dict) -> None:
    p = sub.add_parser(
        "bench", help="a throughput / latency / memory sweep (resumable), or a workload end to end", **fmt
    )
    p.add_argument("--sweep", help="sweep file, or a shipped sweep: cpu-smoke, te-impl, gpu-baseline, ...")
    p.add_argument(
        "--workload",
        choices=("embed", "perturb"),
        help="instead of a sweep: gfqual embed's pipeline, or deleting every gene of --perturb-cells "
        "cells, end to end on --cells, against the static forward of the same batches",
    )
    p.add_argument("--out", help="results file (default results/local/perf-<sweep>.json)")
    p.add_argument(
        "--cells",
        help="a tokenized dataset (gfqual tokenize) whose real cells the realistic layouts "
        "and the workloads use (default: the sweep's cells_from, else synthetic lengths)",
    )
    p.add_argument(
        "--force", action="store_true", help="run a GPU sweep or workload on a CPU anyway (refused when over 10 min)"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        help="workload: variants (default V2-104M); sweep: only these of the sweep's variants "
        "(a tokenized --cells dataset serves one dictionary family: V1 or V2)",
    )
    p.add_argument(
        "--backends", nargs="+", default=["hf-sdpa", "te-packed"], choices=BACKENDS, help="workload: backends"
    )
    p.add_argument("--precisions", nargs="+", default=["bf16"], choices=PRECISION_CHOICES, help="workload: precisions")
    p.add_argument("--repeat-to", type=positive_int, help="workload: repeat the dataset's cells up to this many")
    p.add_argument("--perturb-cells", type=positive_int, default=16, help="perturb workload: cells")
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        help="workload: tokens per batch (default: each backend calibrated to its fastest budget)",
    )
    p.add_argument(
        "--no-plain-loops", action="store_true", help="embed workload: skip the independent plain loops (the anchor)"
    )
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "profile",
        help="CUDA kernel time of one pass by kind (GEMM, attention, LayerNorm, "
        "FP8 casts, other): what caps a speed-up",
        **fmt,
    )
    p.add_argument("--variant", default="V2-316M", help=VARIANT_HELP)
    p.add_argument("--backends", nargs="+", default=["te-fused"], choices=BACKENDS, help="backends")
    p.add_argument(
        "--precisions", nargs="+", default=["bf16", "fp8-delayed"], choices=PRECISION_CHOICES, help="precisions"
    )
    p.add_argument("--batch", type=positive_int, default=8, help="cells per forward")
    p.add_argument("--length", type=positive_int, help="tokens per cell (default: the variant's context)")
    p.add_argument(
        "--forward",
        default="mlm",
        choices=FORWARDS,
        help="what a pass runs: the forward to MLM logits, the encoder alone, or a training step",
    )
    p.add_argument("--repeats", type=positive_int, default=3, help="profiled passes")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--out", help=RESULTS_OUT)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "perf-gate", help="compare a perf run with a baseline of the same GPU; exit 1 on regression", **fmt
    )
    p.add_argument("--baseline", required=True, help="baseline perf results file")
    p.add_argument("--run", required=True, help="perf results file to judge")
    p.add_argument("--max-slowdown", type=float, default=0.05, help="allowed slowdown beyond the measured noise")
    p.set_defaults(func=cmd_perf_gate)
