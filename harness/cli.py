"""gfqual: the Geneformer HF ⇄ TransformerEngine qualification suite (command line).

Thin by design: parse, call an engine, print a summary, write results.
"""

from __future__ import annotations

import argparse
import json
import sys

import harness  # noqa: F401  (sets strict-fp32 defaults before torch touches CUDA)
from harness.backend_names import BACKENDS
from harness.precision import PRECISIONS
from models.errors import CannotRunHere, GfqualError, UsageError
from models.registry import VARIANTS, UnknownVariantError

# Each handler imports what it uses: torch, transformers and TE cost seconds that tokenize, synth,
# variants and the reports never need.


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1 (0 or a negative count is a typo, never a default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a whole number of at least 1")
    return value


def check_output(path: str | None, overwrite: bool = False, option: str = "--out") -> None:
    """Before any work: an output that would replace an existing file is refused unless
    ``--overwrite``; its folder must be writable (a results *folder* gets a new file name)."""
    import os
    from pathlib import Path

    if path is None:
        return
    out = Path(path)
    if out.is_dir():
        folder = out
    else:
        if out.exists() and not overwrite:
            raise UsageError(f"{option} {out} exists; choose another path or pass --overwrite")
        folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest folder that exists: the rest will be created in it
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out}: cannot write in {folder}; choose a writable location")


def cmd_variants(args) -> int:
    if args.json:
        print(json.dumps({name: v.summary() for name, v in VARIANTS.items()}, indent=1))
        return 0
    print(f"{'variant':17s} {'layers':>6s} {'hidden':>6s} {'heads':>5s} {'ffn':>5s} {'context':>7s} {'vocab':>6s}  dicts   specials")
    for v in VARIANTS.values():
        print(
            f"{v.name:17s} {v.num_hidden_layers:6d} {v.hidden_size:6d} {v.num_attention_heads:5d} "
            f"{v.intermediate_size:5d} {v.context:7d} {v.vocab_size:6d}  {v.dictionary_family:7s} "
            f"{' '.join(v.special_tokens)}"
        )
    return 0


def cmd_init(args) -> int:
    import tempfile

    from models import convert
    from models.checkpoint import convert_checkpoint, write_checkpoint
    from models.hf import random_hf_model
    from models.registry import get_variant

    variant = get_variant(args.variant)
    model = random_hf_model(variant, args.seed)
    tensors, _, _ = convert.canonical_tensors(model.state_dict())
    config = {**variant.bert_config(), "torch_dtype": "float32"}
    info = {"variant": variant.name, "seed": args.seed, "source": "random-init (models.hf.random_init_)"}
    if args.layout == "hf":
        write_checkpoint(args.out, tensors, config, extra={"random_init.json": info})
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(f"{tmp}/hf", tensors, config)
            convert_checkpoint(f"{tmp}/hf", "te", args.out)
    print(f"wrote {variant.name} ({args.layout} layout, random weights, seed {args.seed}) to {args.out}")
    return 0


def cmd_convert(args) -> int:
    from models.checkpoint import convert_checkpoint

    info = convert_checkpoint(args.src, args.to, args.out)
    written = sum(info["dtypes"].values())
    print(
        f"converted {info['source_layout']} → {args.to}: {info['tensors_converted']} source tensors into {written} "
        f"(dtypes {info['dtypes']}), ignored {len(info['ignored_keys'])} non-parameter keys; wrote {args.out}"
    )
    return 0


def cmd_verify(args) -> int:
    from models.checkpoint import read_checkpoint, verify_official
    from models.registry import get_variant

    ckpt = read_checkpoint(args.checkpoint)
    verify_official(ckpt, get_variant(args.variant))
    print(f"{ckpt.weight_file}: sha256 {ckpt.sha256} is the official {args.variant} file")
    return 0


def _write(kind, records, weights, config, out) -> list[dict]:
    """One results file, from rank 0 only under torchrun (every rank holds the same records);
    returns the records as written (stamped with their gating flags)."""
    from harness.distributed import context
    from harness.results import make_result, write_result

    result = make_result(kind, records, weights, config)
    if context().is_main:
        print(f"results: {write_result(result, out)}")
    return result["records"]


def cmd_parity(args) -> int:
    from harness.parity.run import ParitySpec, format_verdict, run_config, run_parity
    from models.checkpoint import CheckpointError, check_variant, read_checkpoint
    from models.registry import get_variant

    check_output(args.json, args.overwrite, "--json")
    reference = read_checkpoint(args.reference, expect="hf")
    candidate = read_checkpoint(args.candidate, expect="te")
    if args.variant:
        variant = get_variant(args.variant)
    else:
        matches = reference.variant_candidates()
        if not matches:
            raise CheckpointError(f"{args.reference}: architecture matches no registered variant; pass --variant")
        variant = matches[0]
    for ckpt in (reference, candidate):
        check_variant(ckpt.config, variant, str(ckpt.path))
    spec = ParitySpec(
        variant.name, args.backend, args.precision, n_cells=args.cells,
        max_len=args.length or min(variant.context, 256), micro_batch=args.micro_batch, seed=args.seed,
        h5ad=args.h5ad, dicts=args.dicts,
    )
    device = None if args.device == "auto" else args.device
    records, verdict = run_parity(spec, variant, reference, candidate, device)
    print(format_verdict(verdict))
    if verdict["status"] == "skipped" and args.backend != "te-format-torch":
        print("hint: --backend te-format-torch checks the TE checkpoint layout in plain PyTorch on this machine",
              file=sys.stderr)
    weights = {"reference": reference.describe(), "candidate": candidate.describe()}
    if weights["candidate"]["dtypes"].get("bfloat16"):
        print("note: the candidate stores bf16 tensors (TE export default); its fp32 parity includes that rounding")
    _write("parity", records, weights, run_config([spec]), args.json)
    # 0: within tolerance; 1: not; 3: this machine cannot run it (the reason is printed)
    return {"pass": 0, "fail": 1, "reported": 1}.get(verdict["status"], 3)


def compiler_log_to_file(folder: str = "results/local") -> str:
    """TE compiles small helpers with torch.compile; their recompile warnings are the compiler's
    business, not the user's: they go to a log file, not the terminal."""
    import logging
    from pathlib import Path

    path = Path(folder) / "gfqual-compiler.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    for name in ("torch._dynamo", "torch._inductor"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    return str(path)


KERNEL_CHECK_PRECISIONS = ("bf16", "fp8-delayed-dpa", "fp8-current-dpa")  # gfqual run on a GPU


def default_specs(device: str, variants: list[str], seed: int) -> list:
    """What ``gfqual run`` does with no arguments, by hardware: the most useful it can."""
    from harness.parity.run import ParitySpec

    specs = []
    for name in variants:
        v = VARIANTS[name]
        if device == "cpu":
            specs.append(ParitySpec(name, "te-format-torch", "fp32", max_len=64, seed=seed))
            continue
        specs.append(ParitySpec(name, "te-format-torch", "fp32", max_len=v.context, seed=seed, micro_batch=2))
        for precision in ("fp32", "bf16", "fp8-delayed", "fp8-current", "fp8-delayed-dpa", "fp8-current-dpa",
                          "fp8-block", "mxfp8"):
            specs.append(ParitySpec(name, "te", precision, max_len=v.context, seed=seed, micro_batch=2))
        for precision in ("fp32", "bf16"):  # the fused and packed builds must be as correct as the default
            for backend in ("te-fused", "te-packed"):
                specs.append(ParitySpec(name, backend, precision, max_len=v.context, seed=seed, micro_batch=2))
    return specs


def cmd_run(args) -> int:
    from harness.capability import probe
    from harness.parity.attention_kernel import check_attention_kernel, format_kernel_record
    from harness.parity.run import run_config, run_specs, synthetic_embedding_check, verdicts
    from models.hf import random_hf_model, random_weights_block
    from harness.results import gate_status

    check_output(args.out, args.overwrite)
    cap = probe()
    log = compiler_log_to_file()
    print(f"gfqual run on {cap.gpu_name or 'CPU'} (TE: {cap.te_version or cap.te_error}); "
          f"weights: seeded random init (seed {args.seed}) of the published configs")
    if not cap.cuda:
        print("note: no CUDA GPU: TE itself is not run here; the TE checkpoint layout is checked in plain PyTorch "
              "(te-format-torch). On a GPU with TE, gfqual run adds TE at every precision.")
    specs = default_specs(cap.device, args.variants, args.seed)
    # after each variant's parity, the data path on synthetic counts: tokens -> cell embeddings,
    # HF reference vs TE (GPU) or the TE-layout torch forward (CPU)
    candidate = "te" if cap.skip_reason("te", "fp32") is None else "te-format-torch"
    n_cells, max_len = (12, 64) if cap.device == "cpu" else (240, None)
    records = []
    for name in args.variants:
        v = VARIANTS[name]
        model = random_hf_model(v, args.seed)
        records += run_specs([s for s in specs if s.variant == name], model, model)
        if cap.device == "cuda":  # TE's attention alone, so an attention failure above names its culprit
            for precision in KERNEL_CHECK_PRECISIONS:
                records.append(check_attention_kernel(v, precision, v.context, seed=args.seed))
                print(format_kernel_record(records[-1]))
        rec = synthetic_embedding_check(v, model, candidate, cap.device, n_cells, max_len or v.context, args.seed)
        records.append(rec)
        print(f"{name:17s} {candidate:16s} fp32         {rec['status'].upper():5s} cell embeddings of "
              f"{rec['n_cells']} synthetic cells: rel_l2={rec['rel_l2']:.2e} {rec['violations']}")
    records = _write("parity", records, random_weights_block(args.seed), run_config(specs), args.out)
    checks = verdicts(records) + [r for r in records if r["record"] in ("embedding", "attention_kernel")]
    gating = [s for s in map(gate_status, checks) if s]
    skipped = sum(r["status"] == "skipped" for r in checks)
    beta = [r for r in checks if r["status"] != "skipped" and gate_status(r) is None]
    beta_failed = sum(r["status"] in ("fail", "error") for r in beta)
    print(f"torch compiler messages (TE's compiled helpers): {log}")
    print(f"{len(gating)} checks: {gating.count('fail')} failed"
          + (f"; {skipped} skipped on this machine (reasons above)" if skipped else "")
          + ("; TE itself not run: no CUDA GPU" if not cap.cuda else "")
          + (f"; TE beta FP8 attention, reported and not gating: {beta_failed} of {len(beta)} failed" if beta else ""))
    return 1 if "fail" in gating else 0


def cmd_bench(args) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from harness.distributed import context
    from models.hf import random_weights_block
    from harness.perf.sweep import Sweep, run_sweep
    from harness.results import DEFAULT_RESULTS_DIR

    if (args.sweep is None) == (args.workload is None):
        raise UsageError("gfqual bench takes one of --sweep (kernel sweeps) or --workload (a pipeline end to end)")
    if args.workload:
        return cmd_bench_workload(args)
    ctx = context()  # under torchrun: join the group and take this rank's GPU first
    sweep = Sweep.load(args.sweep)
    if args.cells:
        sweep.cells_from = args.cells
    out = Path(args.out) if args.out else DEFAULT_RESULTS_DIR / f"perf-{sweep.name}.json"
    if out.exists():
        raise UsageError(f"{out} exists; choose another --out")
    check_output(str(out))
    refuse_gpu_sweep_on_cpu(sweep, args.force)
    rows = run_sweep(sweep, out)
    _write("perf", rows, random_weights_block(sweep.seed), {"sweep": asdict(sweep), "world_size": ctx.world_size}, out)
    if ctx.is_main:
        out.with_name(out.name + ".partial.jsonl").unlink()
    return 0


CPU_SWEEP_MINUTES = 10  # longer than this on a CPU is a GPU sweep started by mistake


def refuse_gpu_sweep_on_cpu(sweep, force: bool) -> None:
    """A GPU sweep on a CPU would run for hours: refused unless ``--force`` when it would take over
    ``CPU_SWEEP_MINUTES``, with what it would cost (its tokens at this CPU's measured rate for a
    short cell of its first variant: a lower bound, attention grows faster than the tokens)."""
    import time

    from harness.backends import build_backend
    from harness.capability import probe
    from harness.data.synthetic import synthetic_batch
    from models.hf import random_hf_model
    from harness.precision import get_precision
    from models.registry import get_variant

    if probe().cuda or force:
        return
    points = sweep.points()
    tokens = sum(p.batch * p.seq_len for p in points) * (sweep.warmup + sweep.repeats)
    variant = get_variant(points[0].variant)
    backend = build_backend("hf-sdpa", random_hf_model(variant, 0), get_precision("fp32"), "cpu")
    batch = synthetic_batch(variant, 1, 256, seed=0)
    start = time.perf_counter()
    backend.forward(batch)
    rate = 256 / (time.perf_counter() - start)
    if tokens / rate < CPU_SWEEP_MINUTES * 60:
        return
    raise UsageError(f"--sweep {sweep.name} is a GPU sweep ({len(points)} points, {tokens / 1e6:.0f} M tokens): "
                     f"on this CPU ({rate:.0f} tokens/s for {variant.name} at 256 tokens) it would take at least "
                     f"{tokens / rate / 3600:.0f} h; run it on a GPU, or pass --force")


def cmd_bench_workload(args) -> int:
    """``gfqual bench --workload embed|perturb``: the pipelines end to end (harness.perf.workload)."""
    from pathlib import Path

    from harness.data.stream import read_tokenized
    from models.hf import random_hf_model, random_weights_block
    from harness.perf.workload import embed_workload, perturb_workload
    from models.registry import get_variant

    if not args.cells:
        raise UsageError("--workload needs --cells: a tokenized dataset (gfqual tokenize) to run on")
    out = Path(args.out) if args.out else None
    check_output(args.out)
    rows = []
    for name in args.variants:
        variant = get_variant(name)
        table = read_tokenized(args.cells, variant)
        pool = [c for c in table["input_ids"]]
        n = max(args.repeat_to or len(pool), len(pool))
        cells = [pool[i % len(pool)] for i in range(n)]
        where = f"{args.cells} ({len(pool)} cells" + (f", repeated to {n})" if n > len(pool) else ")")
        source = random_hf_model(variant, args.seed)
        for backend in args.backends:
            for precision in args.precisions:
                if args.workload == "embed":
                    row = embed_workload(variant, backend, precision, cells, source, where, args.max_tokens)
                else:
                    row = perturb_workload(variant, backend, precision, pool[: args.perturb_cells], source, where,
                                           [len(c) for c in pool], max_tokens=args.max_tokens)
                rows.append(row)
                print(_workload_line(row), flush=True)
    _write("perf", rows, random_weights_block(args.seed), {"workload": args.workload, "cells": args.cells,
                                                           "repeat_to": args.repeat_to}, out)
    return 0


def _workload_line(row: dict) -> str:
    head = f"{row['workload']:7s} {row['variant']:10s} {row['backend']:15s} {row['precision']:12s}"
    if row["status"] != "reported":
        return f"{head} {row['status'].upper()}: {row['reason']}"
    if row["workload"] == "perturb":
        return (f"{head} {row['perturbations']} perturbations of {row['cells']} cells: {row['perturbations_per_s']:.0f}/s, "
                f"{row['tokens_per_s']:.0f} tokens/s; {row['projection_cells']} cells: {row['projected_hours']:.2f} h")
    util = row["gpu_util_mean"]
    return (f"{head} {row['cells']} cells: {row['cells_per_s']:.0f} cells/s, {row['tokens_per_s']:.0f} tokens/s "
            f"(static {row['static_tokens_per_s']:.0f}: efficiency {row['pipeline_efficiency']:.0%})"
            + (f", GPU busy {util:.0f}%" if util is not None else "") + f", budget {row['max_tokens']}")


def cmd_profile(args) -> int:
    from harness.capability import probe
    from models.hf import random_hf_model, random_weights_block
    from harness.perf.kernel_profile import format_profile, profile_point
    from harness.perf.sweep import Point
    from models.registry import get_variant

    check_output(args.out)
    if not probe().cuda:
        raise CannotRunHere("gfqual profile: a kernel profile needs a CUDA GPU; none is visible")
    variant = get_variant(args.variant)
    seq_len = args.length or variant.context
    model = random_hf_model(variant, args.seed)
    records = []
    for backend in args.backends:
        for precision in args.precisions:
            point = Point(variant.name, backend, precision, "full", args.batch, seq_len)
            records.append(profile_point(point, model, args.repeats, args.seed))
            print(format_profile(records[-1]))
    _write("perf", records, random_weights_block(args.seed), {"profile": vars(args) | {"func": "profile"}}, args.out)
    return 3 if all(r["status"] == "skipped" for r in records) else 0


def cmd_perf_gate(args) -> int:
    from harness.perf.gate import compare
    from harness.results import read_result

    rows = compare(read_result(args.baseline), read_result(args.run), args.max_slowdown)
    for r in rows:
        flag = "REGRESSED" if r["regressed"] else "ok"
        print(f"{r['variant']:10s} {r['backend']:10s} {r['precision']:12s} {r['layout']:14s} B={r['batch']:<4} "
              f"{r['baseline_cells_per_s']:9.1f} -> {r['cells_per_s']:9.1f} cells/s ({r['ratio']:.3f}, "
              f"allowed -{r['allowed_slowdown']:.1%}) {flag}")
    regressed = sum(r["regressed"] for r in rows)
    print(f"{len(rows)} points compared, {regressed} regressed")
    return 1 if regressed else 0


def _render_kind(kind: str, folder: str, render, out: str, hint: str = "") -> int:
    """One kind's results under ``folder`` through one report renderer."""
    from harness.results import read_results

    results = read_results(folder, kind=kind)
    if not results:
        raise UsageError(f"no {kind} results under {folder}{hint}")
    print(f"wrote {render(results, out)}")
    return 0


def cmd_report_parity(args) -> int:
    from reports.parity import render_parity_report

    return _render_kind("parity", args.results, render_parity_report, args.out)


def cmd_report_downstream(args) -> int:
    from reports.downstream import render_downstream_report

    return _render_kind("downstream", args.results, render_downstream_report, args.out, " (run gfqual eval first)")


def cmd_report_perf(args) -> int:
    from reports.perf import render_perf_plots

    return _render_kind("perf", args.results, render_perf_plots, args.out, " (run gfqual bench first)")


def cmd_report(args) -> int:
    from harness.results import read_results
    from reports.qualification import render_report

    results = sorted((r for folder in args.results for r in read_results(folder)), key=lambda r: r["created"])
    if not results:
        raise UsageError(f"no results files under {', '.join(args.results)}")
    page, md, verdict = render_report(results, args.out)
    print(f"wrote {page}, {md} and verdict.json from {len(results)} results files: {verdict['overall'].upper()}")
    if verdict["overall"] == "fail":
        return 1
    return 0 if verdict["overall"] == "pass" or args.allow_incomplete else 1


def cmd_regenerate_reports(args) -> int:
    from reports.regenerate import regenerate

    for folder in regenerate(args.root):
        print(f"wrote {folder}")
    return 0


def cmd_synth(args) -> int:
    import os
    from pathlib import Path

    from harness.data.synthetic import synthetic_anndata
    from harness.data.dictionaries import resolve_dictionaries
    from models.registry import get_variant

    check_output(args.out, args.overwrite)
    variant = get_variant(args.variant)
    adata = synthetic_anndata(resolve_dictionaries(args.dicts, variant), n_cells=args.cells, n_states=args.states,
                              n_genes=args.genes, seed=args.seed)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.partial")
    adata.write_h5ad(tmp)
    os.replace(tmp, out)  # a crash leaves no half-written file under the real name
    print(f"wrote {adata.n_obs} synthetic cells × {adata.n_vars} genes ({args.states} planted states) to {args.out}")
    return 0


def cmd_tokenize(args) -> int:
    from harness.data.stream import tokenize_to_parquet
    from harness.data.dictionaries import resolve_dictionaries
    from models.registry import get_variant

    variant = get_variant(args.variant)
    summary = tokenize_to_parquet(
        args.input, variant, resolve_dictionaries(args.dicts, variant), args.out, chunk_size=args.chunk_size,
        gene_column=args.gene_column, layer=args.layer, obs_columns=tuple(args.obs_columns),
        filter_pass=not args.no_filter_pass, max_len=args.max_len, map_genes=not args.no_gene_mapping,
        recompute_n_counts=args.recompute_n_counts,
    )
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


def _model_source(checkpoint: str | None, variant, seed: int):
    """(weights to build backends from, the results file's weights block): a checkpoint
    directory, or seeded random weights of the variant's published config (said aloud)."""
    from models.hf import random_hf_model, random_weights_block
    from models.checkpoint import check_variant, read_checkpoint

    if checkpoint:
        source = read_checkpoint(checkpoint)
        check_variant(source.config, variant, checkpoint)
        return source, source.describe()
    print(f"note: no --checkpoint: random weights (seed {seed}); outputs carry no learned biology")
    return random_hf_model(variant, seed), random_weights_block(seed)


def cmd_eval(args) -> int:
    from harness.downstream import run as downstream
    from harness.downstream.finetune import FineTuneConfig
    from harness.downstream.tasks import cell_task_data, gene_task_data
    from models.registry import get_variant

    check_output(args.out, args.overwrite)
    variant = get_variant(args.variant)
    runner_runs = downstream.with_reference([downstream.EvalRun.parse(r) for r in args.runs]) if args.runs else None
    data_options = dict(h5ad=args.h5ad, dicts=args.dicts, max_len=args.max_len, max_cells=args.max_cells, seed=args.seed)
    if args.task == "dosage":
        data = gene_task_data(variant, labels=args.labels, **data_options)
    else:
        data = cell_task_data(variant, label_column=args.label_column, individual_column=args.individual_column,
                              **data_options)
    print(f"{args.task} on {variant.name}: {data.source}")
    source, weights = _model_source(args.checkpoint, variant, args.seed)
    runner = downstream.EvalRunner(source, variant)
    runs = runner_runs or downstream.default_runs(runner.device)
    finetune = FineTuneConfig(epochs=args.epochs, lr=args.lr, freeze_layers=args.freeze_layers, seed=args.seed)
    common = dict(mode=args.mode, n_folds=args.folds, seed=args.seed, emb_layer=args.layer, finetune=finetune)
    if args.task == "dosage":
        records = downstream.evaluate_genes(data, runner, runs, **common)
    elif args.task == "cardiomyopathy":
        records = downstream.evaluate_cells(data, runner, runs, **common)
    else:
        records = downstream.evaluate_perturbation(
            data, runner, runs, args.start_class, args.goal_class, args.perturbation, args.genes,
            args.perturb_cells, args.layer,
        )
    for row in records:
        if row["record"] == "agreement" and "accuracy_diff" in row:
            print(f"{args.task} {row['backend']}@{row['precision']} vs {row['reference']}: "
                  f"ΔAUC {row['roc_auc_diff']:+.4f} [{row['roc_auc_ci_low']:+.4f}, {row['roc_auc_ci_high']:+.4f}]  "
                  f"Δaccuracy {row['accuracy_diff']:+.4f} [{row['accuracy_ci_low']:+.4f}, {row['accuracy_ci_high']:+.4f}]  "
                  f"same label {row['label_agreement']:.3f}  {row['status'].upper()}")
        elif row["record"] == "agreement":
            print(f"{args.task} {row['backend']}@{row['precision']} vs {row['reference']}: shift r="
                  f"{row['goal_shift_pearson']:.4f}, sign agreement above floor {row['sign_agreement_above_floor']:.3f} "
                  f"({row['n_above_floor']}/{row['n_pairs']})")
    config = {"task": args.task, "mode": args.mode, "data": data.source, "runs": [r.name for r in runs],
              "folds": args.folds, "emb_layer": args.layer, "max_len": args.max_len, "seed": args.seed,
              "synthetic": args.h5ad is None}
    if args.mode == "finetune":
        config["finetune"] = vars(finetune)
    _write("downstream", records, weights, config, args.out)
    return 1 if any(r.get("status") == "fail" for r in records) else 0


EMBED_OUTPUTS = (".parquet", ".h5ad")


def embed_defaults(backend: str, precision: str) -> tuple[str, str]:
    """``auto``: the backend measured fastest for embedding where it can run (``te-packed`` at bf16
    on a GPU with TE; results/h100/workload-embed-*.json), else HF sdpa (bf16 on a GPU, fp32 on a CPU)."""
    from harness.capability import probe

    cap = probe()
    te = cap.skip_reason("te-packed", "bf16") is None
    if backend == "auto":
        backend = "te-packed" if te else "hf-sdpa"
    if precision == "auto":
        precision = "bf16" if cap.cuda else "fp32"
    return backend, precision


def cmd_embed(args) -> int:
    import time
    from pathlib import Path

    import numpy as np

    from harness import STARTED
    from harness.backends import build_backend
    from harness.capability import probe
    from harness.data.stream import read_tokenized
    from harness.distributed import barrier, context
    from harness.embeddings import default_token_budget, extract, save_embeddings
    from harness.perf.telemetry import Telemetry
    from harness.precision import get_precision
    from harness.progress import progress_bar
    from models.registry import get_variant

    out = Path(args.out)
    if out.suffix not in EMBED_OUTPUTS:
        raise UsageError(f"--out {out}: write embeddings to a {' or '.join(EMBED_OUTPUTS)} file")
    check_output(args.out, args.overwrite)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    check_output(args.json, args.overwrite, "--json")
    ctx = context()  # under torchrun: join the group and take this rank's GPU before building
    variant = get_variant(args.variant)
    backend_name, precision = embed_defaults(args.backend, args.precision)
    marks = [("imports_s", time.perf_counter())]  # start-up, by part: where the seconds before the first batch go
    table = read_tokenized(args.input, variant)
    cells = [np.asarray(ids, dtype=np.int64) for ids in table["input_ids"]]
    marks.append(("data_s", time.perf_counter()))
    source, weights = _model_source(args.checkpoint, variant, args.seed)
    marks.append(("weights_s", time.perf_counter()))
    backend = build_backend(backend_name, source, get_precision(precision))
    marks.append(("build_s", time.perf_counter()))
    budget = args.max_tokens or default_token_budget(backend, variant)
    options = dict(mode=args.mode, emb_layer=args.layer, max_tokens=budget)
    extract(backend, cells[:2], variant, **options)  # CUDA context, kernels loaded, FP8 scales calibrated
    barrier()
    marks.append(("warmup_s", time.perf_counter()))
    startup = marks[-1][1] - STARTED
    parts = {name: t - before for (name, t), before in zip(marks, [STARTED] + [t for _, t in marks])}
    with progress_bar(len(cells), "embedding", args.quiet) as bar, Telemetry() as telemetry:
        start = time.perf_counter()
        emb = extract(backend, cells, variant, progress=bar.update, **options)  # sharded under torchrun
        seconds = time.perf_counter() - start
    if not ctx.is_main:
        return 0
    info = {"variant": variant.name, "backend": backend_name, "precision": precision, "layer": args.layer,
            "weights": weights.get("source", "checkpoint")}
    save_embeddings(emb, table, out, info)
    tokens = sum(len(c) for c in cells)
    util = telemetry.summary().get("gpu_util")
    print(f"{len(cells)} cells, {args.mode} embeddings of {emb.layer_stage} via {backend_name} {precision} "
          f"on {ctx.world_size} rank(s), {budget} tokens per batch: {len(cells) / seconds:.1f} cells/s, "
          f"{tokens / seconds:.0f} tokens/s" + (f", GPU busy {util:.0f}%" if util is not None else "")
          + f"; start-up {startup:.1f} s; wrote {out}")
    record = {"record": "run", "status": "reported", "variant": variant.name, "backend": backend_name,
              "precision": precision, "workload": "embed", "attention_backend": backend.attention_backend,
              "world_size": ctx.world_size, "launcher": "torchrun" if ctx.distributed else "one process",
              "max_tokens": budget, "budget_from": "--max-tokens" if args.max_tokens else "free GPU memory",
              "input_layout": backend.input_layout, "mode": args.mode, "cells": len(cells), "tokens": tokens,
              "seconds": seconds, "cells_per_s": len(cells) / seconds, "tokens_per_s": tokens / seconds,
              "startup_s": startup, **{f"startup_{k}": v for k, v in parts.items()},
              "gpu_util_mean": util, "device": probe().gpu_name or "cpu"}
    _write("perf", [record], weights, {"input": str(args.input), "layer": args.layer, "max_tokens": args.max_tokens,
                                       "backend": args.backend, "precision": args.precision}, args.json)
    return 0


EXIT_CODES = ("exit codes: 0 done / pass, 1 fail (a verdict), 2 bad input (the message names the option or file "
              "and the fix), 3 cannot run here (e.g. no GPU for TE), 4 internal error (traceback kept)")
VARIANT_HELP = "a Geneformer variant: " + ", ".join(VARIANTS)
RESULTS_OUT = "results file (.json) or folder (a new file in it); default results/local/"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless there is none or its help already says it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = dict(formatter_class=_Help, epilog=EXIT_CODES)
    parser = argparse.ArgumentParser(prog="gfqual", description=__doc__, **fmt)
    sub = parser.add_subparsers(dest="command", required=True)
    precisions = [n for n in PRECISIONS if n != "fp64"]
    seed_help = "seed of the random weights (used when no --checkpoint is given)"

    p = sub.add_parser("variants", help="list the registered Geneformer variants", **fmt)
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("init", help="write a checkpoint of a variant with seeded random weights", **fmt)
    p.add_argument("--variant", required=True, help=VARIANT_HELP + "; which published config")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--out", required=True, help="new checkpoint directory (an existing non-empty one is refused)")
    p.add_argument("--layout", choices=("hf", "te"), default="hf", help="checkpoint layout: HF or NVIDIA's TE")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("convert", help="convert a checkpoint between HF and TE layouts", **fmt)
    p.add_argument("--from", dest="src", required=True, help="checkpoint directory to read")
    p.add_argument("--to", choices=("te", "hf"), required=True, help="target layout")
    p.add_argument("--out", required=True, help="new checkpoint directory (an existing non-empty one is refused)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("verify", help="check a weight file against the official sha256", **fmt)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--variant", required=True, help=VARIANT_HELP + "; which official release to compare with")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("parity", help="layer-by-layer parity of two checkpoints; exit 0 pass, 1 fail, "
                                      "2 bad input, 3 cannot run here", **fmt)
    p.add_argument("--reference", required=True, help="HF checkpoint directory")
    p.add_argument("--candidate", required=True, help="TE checkpoint directory")
    p.add_argument("--precision", default="fp32", choices=precisions, help="candidate precision")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: a GPU when visible")
    p.add_argument("--backend", default="te", choices=[b for b in BACKENDS if not b.startswith("hf")],
                   help="candidate: te needs a GPU with TE; te-format-torch runs the TE layout on a CPU")
    p.add_argument("--variant", help=VARIANT_HELP + " (default: the one the reference's config matches)")
    p.add_argument("--cells", type=positive_int, default=4, help="cells compared")
    p.add_argument("--length", type=positive_int, help="longest cell in tokens (default: min(context, 256))")
    p.add_argument("--micro-batch", type=positive_int, default=2, help="cells per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic cells")
    p.add_argument("--h5ad", help="real cells: AnnData of raw counts with var['ensembl_id'] (default: synthetic)")
    p.add_argument("--dicts", help="Geneformer dictionary folder (holds gc30M/ and gc104M/); needed with --h5ad")
    p.add_argument("--json", help=RESULTS_OUT)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("run", help="the main job: the most useful parity matrix this machine can run", **fmt)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="variants to check")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--out", help=RESULTS_OUT)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="a throughput / latency / memory sweep (resumable), or a workload end to end",
                       **fmt)
    p.add_argument("--sweep", help="sweep file, or a shipped sweep: cpu-smoke, te-impl, gpu-baseline, ...")
    p.add_argument("--workload", choices=("embed", "perturb"),
                   help="instead of a sweep: gfqual embed's pipeline, or deleting every gene of --perturb-cells "
                        "cells, end to end on --cells, against the static forward of the same batches")
    p.add_argument("--out", help="results file (default results/local/perf-<sweep>.json)")
    p.add_argument("--cells", help="a tokenized dataset (gfqual tokenize) whose real cells the realistic layouts "
                                   "and the workloads use (default: the sweep's cells_from, else synthetic lengths)")
    p.add_argument("--force", action="store_true", help="run a GPU sweep on a CPU anyway (hours)")
    p.add_argument("--variants", nargs="+", default=["V2-104M"], choices=list(VARIANTS), help="workload: variants")
    p.add_argument("--backends", nargs="+", default=["hf-sdpa", "te-packed"], choices=BACKENDS, help="workload: backends")
    p.add_argument("--precisions", nargs="+", default=["bf16"], choices=precisions, help="workload: precisions")
    p.add_argument("--repeat-to", type=positive_int, help="workload: repeat the dataset's cells up to this many")
    p.add_argument("--perturb-cells", type=positive_int, default=16, help="perturb workload: cells")
    p.add_argument("--max-tokens", type=positive_int, help="workload: tokens per batch (default: from free GPU memory)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("profile", help="CUDA kernel time of one forward by kind (GEMM, attention, LayerNorm, "
                                       "FP8 casts, other): what caps a speed-up", **fmt)
    p.add_argument("--variant", default="V2-316M", help=VARIANT_HELP)
    p.add_argument("--backends", nargs="+", default=["te-fused"], choices=BACKENDS, help="backends")
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp8-delayed"], choices=precisions, help="precisions")
    p.add_argument("--batch", type=positive_int, default=8, help="cells per forward")
    p.add_argument("--length", type=positive_int, help="tokens per cell (default: the variant's context)")
    p.add_argument("--repeats", type=positive_int, default=3, help="profiled forwards")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--out", help=RESULTS_OUT)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("perf-gate", help="compare a perf run with a baseline of the same GPU; exit 1 on regression",
                       **fmt)
    p.add_argument("--baseline", required=True, help="baseline perf results file")
    p.add_argument("--run", required=True, help="perf results file to judge")
    p.add_argument("--max-slowdown", type=float, default=0.05, help="allowed slowdown beyond the measured noise")
    p.set_defaults(func=cmd_perf_gate)

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
    p.add_argument("--obs-columns", nargs="*", default=[], help="obs columns carried into the dataset")
    p.add_argument("--chunk-size", type=positive_int, default=2048, help="cells read and written per chunk")
    p.add_argument("--max-len", type=positive_int, help="tokens per cell (default: the variant's context)")
    p.add_argument("--no-filter-pass", action="store_true", help="ignore obs['filter_pass']")
    p.add_argument("--no-gene-mapping", action="store_true",
                   help="take gene IDs literally (default: upper-case and map them through the family's "
                        "ensembl_mapping_dict, summing columns that map onto one gene, as Geneformer does)")
    p.add_argument("--recompute-n-counts", action="store_true",
                   help="use each cell's row sum as its total, ignoring obs['n_counts']")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("embed", help="cell or gene embeddings of a tokenized dataset", **fmt)
    p.add_argument("--input", required=True, help="output folder of gfqual tokenize")
    p.add_argument("--variant", required=True, help=VARIANT_HELP)
    p.add_argument("--checkpoint", help="HF or TE checkpoint directory (default: random weights)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                   help="auto: te-packed where TE runs, else hf-sdpa")
    p.add_argument("--precision", default="auto", choices=["auto", *precisions],
                   help="auto: bf16 on a GPU, fp32 on a CPU")
    p.add_argument("--mode", default="cell", choices=("cell", "cls", "gene"), help="what to embed")
    p.add_argument("--layer", type=int, default=-1, help="Geneformer emb_layer: -1 second-to-last, 0 last")
    p.add_argument("--max-tokens", type=positive_int,
                   help="tokens per batch (default: from the GPU's free memory and the model width; 16,384 on a CPU)")
    p.add_argument("--out", required=True, help="embeddings file: .h5ad (obsm['X_geneformer']) or .parquet")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (and --json file)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", help=RESULTS_OUT)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("eval", help="downstream tasks, HF vs TE side by side: dosage | cardiomyopathy | perturb; "
                                    "exit 1 when a TE run leaves its HF peer's bound", **fmt)
    p.add_argument("task", choices=("dosage", "cardiomyopathy", "perturb"), help="the downstream task")
    p.add_argument("--variant", default="V1-10M", help=VARIANT_HELP)
    p.add_argument("--checkpoint", help="HF or TE checkpoint directory (default: seeded random weights)")
    p.add_argument("--seed", type=int, default=0, help=seed_help + " and of the folds")
    p.add_argument("--runs", nargs="+", metavar="BACKEND@PRECISION",
                   help="default: hf-sdpa@fp32, hf-sdpa@bf16, te@fp32, te@bf16, te@fp8-current (GPU); "
                   "hf-sdpa@fp32, te-format-torch@fp32 and the TE rows as skipped (CPU)")
    p.add_argument("--mode", default="probe", choices=("probe", "finetune"), help="linear probe or fine-tuning")
    p.add_argument("--h5ad", help="raw counts with var['ensembl_id'] (default: synthetic data with a planted signal)")
    p.add_argument("--dicts", help="Geneformer dictionary folder (gc30M/, gc104M/); needed with --h5ad")
    p.add_argument("--labels", help="dosage: the dosage_sens_tf_labels.csv of the Geneformer example")
    p.add_argument("--label-column", default="disease", help="cardiomyopathy/perturb: obs column of the class")
    p.add_argument("--individual-column", default="individual", help="obs column of the donor (splits by it)")
    p.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds")
    p.add_argument("--layer", type=int, default=-1, help="Geneformer emb_layer: -1 second-to-last, 0 last")
    p.add_argument("--max-len", type=positive_int, help="tokens per cell (default: the variant's context)")
    p.add_argument("--max-cells", type=positive_int, help="first N cells of --h5ad (or N synthetic cells)")
    p.add_argument("--epochs", type=positive_int, default=1, help="finetune mode: epochs")
    p.add_argument("--lr", type=float, default=5e-5, help="finetune mode: encoder learning rate")
    p.add_argument("--freeze-layers", type=int, default=2, help="finetune mode: lowest layers kept frozen")
    p.add_argument("--start-class", default="dilated", help="perturb: cells to perturb")
    p.add_argument("--goal-class", default="non-failing", help="perturb: the state shifts are measured toward")
    p.add_argument("--perturbation", default="delete", choices=("delete", "overexpress"), help="perturb: what to do")
    p.add_argument("--genes", type=positive_int, default=20, help="perturb: the N genes most often expressed in start cells")
    p.add_argument("--perturb-cells", type=positive_int, default=16, help="perturb: how many start-class cells")
    p.add_argument("--out", help=RESULTS_OUT)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="hardware qualification report (HTML + markdown) from results files", **fmt)
    p.add_argument("--results", required=True, nargs="+", help="folders of results files (searched recursively)")
    p.add_argument("--out", required=True, help="report folder: report.html, report.md, verdict.json (regenerated)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="exit 0 when nothing failed but the verdict does not cover everything (else exit 1)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("regenerate-reports", help="re-render every committed report and plot from results/", **fmt)
    p.add_argument("--root", default=".", help="repository root to write them under")
    p.set_defaults(func=cmd_regenerate_reports)

    p = sub.add_parser("report-downstream", help="render the downstream report (markdown + plots) from results", **fmt)
    p.add_argument("--results", required=True, help="folder of results files")
    p.add_argument("--out", required=True, help="report folder (its report files are regenerated)")
    p.set_defaults(func=cmd_report_downstream)

    p = sub.add_parser("report-perf", help="draw the perf plots (throughput and memory vs batch, FP8 speed-up, "
                                           "energy per cell, layouts) from results", **fmt)
    p.add_argument("--results", required=True, help="folder of results files")
    p.add_argument("--out", required=True, help="folder for the PNG files (regenerated)")
    p.set_defaults(func=cmd_report_perf)

    p = sub.add_parser("report-parity", help="render the parity report (markdown + plots) from results", **fmt)
    p.add_argument("--results", required=True, help="folder of results files")
    p.add_argument("--out", required=True, help="report folder (its report files are regenerated)")
    p.set_defaults(func=cmd_report_parity)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand under the exit-code contract (``models/errors.py``): 0 done / pass,
    1 fail, 2 bad input, 3 cannot run here, 4 internal error (traceback kept)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GfqualError as exc:
        print(f"gfqual: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        import traceback

        traceback.print_exc()
        print("gfqual: internal error (exit 4): a bug or a broken environment, not a verdict; the traceback is above",
              file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
