"""Parity: two checkpoints compared layer by layer (parity), and the main job (run).

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

import sys

from harness.backend_names import BACKENDS, OBJECTIVES
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
from models.registry import VARIANTS


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
        variant.name,
        args.backend,
        args.precision,
        n_cells=args.cells,
        max_len=args.length or min(variant.context, 256),
        micro_batch=args.micro_batch,
        seed=args.seed,
        h5ad=args.h5ad,
        dicts=args.dicts,
    )
    device = None if args.device == "auto" else args.device
    records, verdict = run_parity(spec, variant, reference, candidate, device)
    print(format_verdict(verdict))
    if verdict["status"] == "skipped" and args.backend != "te-format-torch":
        print(
            "hint: --backend te-format-torch checks the TE checkpoint layout in plain PyTorch on this machine",
            file=sys.stderr,
        )
    weights = {"reference": reference.describe(), "candidate": candidate.describe()}
    if weights["candidate"]["dtypes"].get("bfloat16"):
        print("note: the candidate stores bf16 tensors (TE export default); its fp32 parity includes that rounding")
    write_results("parity", records, weights, run_config([spec]), args.json)
    # 0: within tolerance; 1: not; 3: this machine cannot run it (the reason is printed)
    return {"pass": 0, "fail": 1, "reported": 1}.get(verdict["status"], 3)


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

    check_output(args.out, args.overwrite)
    cap = probe()
    log = compiler_log_to_file()
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
            f"{name:17s} {candidate:16s} fp32         {rec['status'].upper():5s} cell embeddings of "
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

    check_output(args.out, args.overwrite)
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
        choices=[b for b in BACKENDS if not b.startswith("hf")],
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
