"""Parity: two checkpoints compared layer by layer (parity), and the main job (run).

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.backend_names import BACKENDS, OBJECTIVES, backend_spec, backends_where
from harness.cli.common import (
    PRECISION_CHOICES,
    RESULTS_OUT,
    SEED_HELP,
    VARIANT_HELP,
    check_output,
    compiler_log_to_file,
    nonnegative_int,
    positive_int,
    write_results,
)
from harness.outputs import interruptible
from harness.progress import row_head
from models.errors import UsageError
from models.registry import VARIANTS


def cmd_parity(args) -> int:
    from harness.api import parity
    from harness.parity.run import format_verdict
    from harness.results import DEFAULT_RESULTS_DIR

    check_output(args.json, "results", args.overwrite, "--json")
    check = parity(
        args.reference,
        args.candidate,
        variant=args.variant,
        backend=args.backend,
        precision=args.precision,
        device=None if args.device == "auto" else args.device,
        cells=args.cells,
        length=args.length,
        micro_batch=args.micro_batch,
        seed=args.seed,
        h5ad=args.h5ad,
        dicts=args.dicts,
        out=args.json or DEFAULT_RESULTS_DIR,
        overwrite=args.overwrite,
    )
    print(format_verdict(check.verdict))
    if check.status == "skipped" and backend_spec(args.backend).needs_te:
        print(
            "hint: --backend te-format-torch checks the TE checkpoint layout in plain PyTorch on this machine",
            file=sys.stderr,
        )
    if check.result["weights"]["candidate"]["dtypes"].get("bfloat16"):
        print("note: the candidate stores bf16 tensors (TE export default); its fp32 parity includes that rounding")
    print(f"results: {check.path}")
    # 0: within tolerance; 1: not; 3: this machine cannot run it (the reason is printed)
    return {"pass": 0, "fail": 1, "reported": 1}.get(check.status, 3)


def cmd_run(args) -> int:
    from harness.capability import probe
    from harness.parity.attention_kernel import check_attention_kernel, format_kernel_record
    from harness.parity.run import (
        KERNEL_CHECK_PRECISIONS,
        default_specs,
        run_config,
        run_specs,
        synthetic_embedding_check,
        verdicts,
    )
    from harness.results import gate_status
    from models.hf import random_hf_model
    from models.random_weights import random_weights_block

    check_output(args.out, "results", args.overwrite)
    cap = probe()
    log = compiler_log_to_file(args.out)
    print(
        f"gfqual run on {cap.gpu_name or 'CPU'} (TE: {cap.te_version or cap.te_error}); "
        f"weights: seeded random init (seed {args.seed}) of the published configs"
    )
    if not cap.cuda:
        print(
            "note: no CUDA GPU: TE itself is not run here; the TE checkpoint layout is checked in plain PyTorch "
            "(te-format-torch). On a GPU with TE, gfqual run adds TE at every precision."
        )
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
        print(
            f"{row_head(rec)} {rec['status'].upper():5s} cell embeddings of "
            f"{rec['n_cells']} synthetic cells: rel_l2={rec['rel_l2']:.2e} {rec['violations']}"
        )
    records = write_results("parity", records, random_weights_block(args.seed), run_config(specs), args.out)
    checks = verdicts(records) + [r for r in records if r["record"] in ("embedding", "attention_kernel")]
    gating = [s for s in map(gate_status, checks) if s]
    skipped = sum(r["status"] == "skipped" for r in checks)
    beta = [r for r in checks if r["status"] != "skipped" and gate_status(r) is None]
    beta_failed = sum(r["status"] in ("fail", "error") for r in beta)
    print(f"torch compiler messages (TE's compiled helpers): {log}")
    print(
        f"{len(gating)} checks: {gating.count('fail')} failed"
        + (f"; {skipped} skipped on this machine (reasons above)" if skipped else "")
        + ("; TE itself not run: no CUDA GPU" if not cap.cuda else "")
        + (f"; TE beta FP8 attention, reported and not gating: {beta_failed} of {len(beta)} failed" if beta else "")
    )
    return 1 if "fail" in gating else 0


def cmd_train_parity(args) -> int:
    from harness.capability import probe
    from harness.parity.training_parity import default_training_specs, run_training_parity, training_config
    from harness.results import gate_status
    from models.random_weights import random_weights_block

    check_output(args.out, "results", args.overwrite)
    cap = probe()
    specs = default_training_specs(cap.device, args.variants, args.precisions, args.steps, args.seed, args.objectives)
    print(
        f"gfqual train-parity on {cap.gpu_name or 'CPU'}: gradients and {specs[0].steps}-step AdamW trajectories "
        f"({', '.join(dict.fromkeys(s.objective for s in specs))}), {specs[0].candidate} against HF fp64; "
        f"weights: seeded random init (seed {args.seed})"
    )
    records = run_training_parity(specs, args.seed)
    records = write_results("parity", records, random_weights_block(args.seed), training_config(specs), args.out)
    gating = [s for s in map(gate_status, records) if s]
    print(f"{len(gating)} training checks: {gating.count('fail')} failed")
    return 1 if "fail" in gating else 0


def cmd_train_band(args) -> int:
    from harness.capability import probe
    from harness.data.stream import read_tokenized
    from harness.parity.band_files import band_config, band_weights
    from harness.parity.training_band import BandSpec, CellPool, run_band
    from models.registry import get_variant

    check_output(args.out, "results", args.overwrite)
    variant = get_variant(args.variant)
    if args.objective == "classify" and not args.label_column:
        raise UsageError("--objective classify needs --label-column: the tokenized cells' column of cell labels")
    cells: list[list[int]] = []
    labels: list[str] | None = [] if args.label_column else None
    for folder in args.cells:
        frame = read_tokenized(folder, variant)
        if labels is not None:
            if args.label_column not in frame.columns:
                raise UsageError(
                    f"{folder} has no column {args.label_column!r} (it has {', '.join(map(str, frame.columns))}); "
                    "tokenize with --obs-columns naming it"
                )
            labels += frame[args.label_column].astype(str).tolist()
        cells += [list(map(int, ids)) for ids in frame["input_ids"]]
    spec = BandSpec(
        variant=variant.name,
        objective=args.objective,
        candidate=args.backend,
        precisions=tuple(args.precisions),
        reference_precision=args.reference_precision,
        seeds=args.seeds,
        first_seed=args.first_seed,
        steps=args.steps,
        eval_every=args.eval_every,
        batch_cells=args.batch_cells,
        max_len=args.max_len,
        lr=args.lr,
    )
    if args.rejudge:
        return _rejudge(args, cells, labels)
    pool = CellPool.from_cells(cells, labels, spec)
    print(
        f"gfqual train-band on {probe().gpu_name or 'CPU'}: {variant.name} {args.objective}, {args.seeds} seeds x "
        f"{args.steps} steps of {args.batch_cells} fresh cells ({len(pool.train)} to train on, {len(pool.held_out)} "
        f"held out), lr {args.lr:g}, {args.backend} at {', '.join(args.precisions)} against HF "
        f"{args.reference_precision}; "
        "weights: seeded random init (one per seed)"
    )
    # a .json --out keeps each finished run in OUT.partial.jsonl: a killed or interrupted band resumes
    partial = (
        Path(args.out).with_name(Path(args.out).name + ".partial.jsonl") if str(args.out).endswith(".json") else None
    )
    resume = f"{partial.name} keeps the finished runs: run the same command to resume" if partial else "run it again"
    with interruptible(resume):
        records = run_band(spec, pool, trace=args.trace, partial=partial)
    records = write_results("parity", records, band_weights(spec), band_config(spec, pool, list(args.cells)), args.out)
    if partial is not None:
        partial.unlink(missing_ok=True)
    return _band_outcome(records)


def _band_outcome(records: list[dict]) -> int:
    """Each band verdict on the console, and the exit code: 1 when any gating check fails."""
    from harness.results import gate_status

    for r in records:
        if r["record"] == "band_verdict":
            print(f"{r['precision']:12s} {r['status'].upper():5s} {r.get('violations') or r.get('reason') or ''}")
    gating = [s for s in map(gate_status, records) if s]
    print(f"{len(gating)} training-band checks: {gating.count('fail')} failed")
    return 1 if "fail" in gating else 0


def _rejudge(args, cells: list[list[int]], labels: list[str] | None) -> int:
    """``train-band --rejudge FILE [FILE ...]``: the files' runs (several files: other seeds of one
    band, run in parallel) judged together by today's rule, the spec and split rebuilt from the
    same cells; nothing is trained."""
    from harness.parity.band_files import rejudge
    from harness.parity.training_band import BandSpec, CellPool
    from harness.results import read_result, write_result

    results = [read_result(path) for path in args.rejudge]
    for path, result in zip(args.rejudge, results):
        spec = result["config"].get("spec")
        if result["kind"] != "parity" or not spec or not any(r["record"] == "band_point" for r in result["records"]):
            raise UsageError(f"--rejudge {path}: not a gfqual train-band results file (no band_point records)")
        if (spec["variant"], spec["objective"]) != (args.variant, args.objective):
            raise UsageError(
                f"--rejudge {path} holds {spec['variant']} {spec['objective']}; "
                f"give --variant {spec['variant']} --objective {spec['objective']}"
            )
    pool = CellPool.from_cells(cells, labels, BandSpec.from_config(results[0]["config"]["spec"]))
    new = rejudge(results, pool)
    print(f"results: {write_result(new, args.out)} (the runs of {' + '.join(args.rejudge)}, judged again)")
    return _band_outcome(new["records"])


def register(sub, fmt: dict) -> None:
    p = sub.add_parser(
        "parity",
        help="layer-by-layer parity of two checkpoints; exit 0 pass, 1 fail, 2 bad input, 3 cannot run here",
        **fmt,
    )
    p.add_argument("--reference", required=True, help="HF checkpoint directory")
    p.add_argument("--candidate", required=True, help="TE checkpoint directory")
    p.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES, help="candidate precision")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: a GPU when visible")
    p.add_argument(
        "--backend",
        default="te",
        choices=backends_where(family="te"),
        help="candidate: te needs a GPU with TE; te-format-torch runs the TE layout on a CPU",
    )
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
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--out", help=RESULTS_OUT)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "train-parity",
        help="gradients layer by layer and AdamW loss trajectories (MLM pretraining, cell-classifier fine-tuning), "
        "TE against HF; exit 1 on a failure",
        **fmt,
    )
    p.add_argument("--variants", nargs="+", default=["V1-10M", "V2-104M"], choices=list(VARIANTS), help="variants")
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISION_CHOICES,
        help="candidate precisions (default: fp32 on a CPU; on a GPU fp32, bf16 and every FP8 recipe)",
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        choices=OBJECTIVES,
        help="mlm: Geneformer's pretraining loss; classify: a seeded BertForSequenceClassification head on the "
        "encoder, as Geneformer's Classifier fine-tunes (default: both)",
    )
    p.add_argument(
        "--steps",
        type=nonnegative_int,
        help="optimizer steps per trajectory; 0: gradients only (default 50 CPU, 200 GPU)",
    )
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--out", help=RESULTS_OUT)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_train_parity)

    p = sub.add_parser(
        "train-band",
        help="does a precision train like bf16? fresh real cells each step, held-out loss at fixed steps over "
        "several seeds, against the band HF bf16's seeds span; exit 1 when a precision leaves it",
        **fmt,
    )
    p.add_argument("--cells", nargs="+", required=True, help="tokenized cell folders (gfqual tokenize) to draw from")
    p.add_argument("--variant", required=True, choices=list(VARIANTS), help=VARIANT_HELP)
    p.add_argument("--objective", default="mlm", choices=OBJECTIVES, help="mlm pretraining or classify")
    p.add_argument("--label-column", help="classify: the tokenized cells' column of labels (tokenize --obs-columns)")
    p.add_argument("--backend", default="te", choices=list(BACKENDS), help="candidate backend")
    p.add_argument("--precisions", nargs="+", default=["bf16"], choices=PRECISION_CHOICES, help="candidate precisions")
    p.add_argument("--reference-precision", default="bf16", choices=PRECISION_CHOICES, help="HF reference's precision")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds (weights, cell order, masks, head)")
    p.add_argument("--first-seed", type=nonnegative_int, default=0, help="the first seed (seeds run from it on)")
    p.add_argument("--steps", type=positive_int, default=200, help="optimizer steps per run")
    p.add_argument("--eval-every", type=positive_int, default=25, help="held-out evaluation every N steps")
    p.add_argument("--batch-cells", type=positive_int, default=8, help="fresh cells per step")
    p.add_argument("--max-len", type=positive_int, default=512, help="tokens kept per cell (its highest-ranked genes)")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (the notebooks' 5e-5)")
    p.add_argument(
        "--trace", action="store_true", help="record each layer's gradient and weight norms at every step (slow)"
    )
    p.add_argument(
        "--rejudge",
        nargs="+",
        metavar="FILE",
        help="train-band results files: judge their runs again by today's rule, several files (other seeds of "
        "one band, run in parallel with --first-seed) together as one band (nothing is trained; give the "
        "--cells, --variant, --objective and --label-column they were run with)",
    )
    p.add_argument("--out", help=RESULTS_OUT)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_train_band)
