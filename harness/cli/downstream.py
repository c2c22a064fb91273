"""Downstream: the Geneformer tasks, HF vs TE side by side (eval).

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

import sys

from harness.cli.common import (
    RESULTS_OUT,
    SEED_HELP,
    VARIANT_HELP,
    at_least,
    check_output,
    model_source,
    positive_int,
    write_results,
)


def cmd_eval(args) -> int:
    from harness.downstream import run as downstream
    from harness.downstream.finetune import FineTuneConfig
    from harness.downstream.tasks import cell_task_data, gene_task_data
    from models.registry import get_variant

    check_output(args.out, "results", args.overwrite)
    variant = get_variant(args.variant)
    runner_runs = downstream.with_reference([downstream.EvalRun.parse(r) for r in args.runs]) if args.runs else None
    data_options = dict(
        h5ad=args.h5ad, dicts=args.dicts, max_len=args.max_len, max_cells=args.max_cells, seed=args.seed
    )
    if args.task == "dosage":
        data = gene_task_data(variant, labels=args.labels, **data_options)
    else:
        data = cell_task_data(
            variant, label_column=args.label_column, individual_column=args.individual_column, **data_options
        )
    print(f"{args.task} on {variant.name}: {data.source}")
    source, weights = model_source(args.checkpoint, variant, args.seed)
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
            data,
            runner,
            runs,
            args.start_class,
            args.goal_class,
            args.perturbation,
            args.genes,
            args.perturb_cells,
            args.layer,
        )
    for row in records:
        if row["record"] == "agreement" and "accuracy_diff" in row:
            print(
                f"{args.task} {row['backend']}@{row['precision']} vs {row['reference']}: "
                f"ΔAUC {row['roc_auc_diff']:+.4f} [{row['roc_auc_ci_low']:+.4f}, {row['roc_auc_ci_high']:+.4f}]  "
                f"Δaccuracy {row['accuracy_diff']:+.4f} "
                f"[{row['accuracy_ci_low']:+.4f}, {row['accuracy_ci_high']:+.4f}]  "
                f"same label {row['label_agreement']:.3f}  {row['status'].upper()}"
            )
        elif row["record"] == "agreement":
            print(
                f"{args.task} {row['backend']}@{row['precision']} vs {row['reference']}: shift r="
                f"{row['goal_shift_pearson']:.4f}, sign agreement above floor {row['sign_agreement_above_floor']:.3f} "
                f"({row['n_above_floor']}/{row['n_pairs']})"
            )
    config = {
        "task": args.task,
        "mode": args.mode,
        "data": data.source,
        "runs": [r.name for r in runs],
        "folds": args.folds,
        "emb_layer": args.layer,
        "max_len": args.max_len,
        "seed": args.seed,
        "synthetic": args.h5ad is None,
    }
    if args.mode == "finetune":
        config["finetune"] = vars(finetune)
    write_results("downstream", records, weights, config, args.out)
    if any(r.get("status") == "fail" for r in records):
        return 1
    if not any(r["record"] == "agreement" and r.get("status") != "skipped" for r in records):
        reasons = sorted({r["reason"] for r in records if r.get("status") == "skipped" and r.get("reason")})
        print(
            "gfqual: nothing was compared (exit 3): no run besides the HF fp32 reference ran here"
            + (f" ({'; '.join(reasons)})" if reasons else ""),
            file=sys.stderr,
        )
        return 3
    return 0


def register(sub, fmt: dict) -> None:
    p = sub.add_parser(
        "eval",
        help="downstream tasks, HF vs TE side by side: dosage | cardiomyopathy | perturb; "
        "exit 1 when a TE run leaves its HF peer's bound",
        **fmt,
    )
    p.add_argument("task", choices=("dosage", "cardiomyopathy", "perturb"), help="the downstream task")
    p.add_argument("--variant", default="V1-10M", help=VARIANT_HELP)
    p.add_argument("--checkpoint", help="HF or TE checkpoint directory (default: seeded random weights)")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP + " and of the folds")
    p.add_argument(
        "--runs",
        nargs="+",
        metavar="BACKEND@PRECISION",
        help="default: hf-sdpa@fp32, hf-sdpa@bf16, te@fp32, te@bf16, te@fp8-current (GPU); "
        "hf-sdpa@fp32, te-format-torch@fp32 and the TE rows as skipped (CPU)",
    )
    p.add_argument("--mode", default="probe", choices=("probe", "finetune"), help="linear probe or fine-tuning")
    p.add_argument("--h5ad", help="raw counts with var['ensembl_id'] (default: synthetic data with a planted signal)")
    p.add_argument("--dicts", help="Geneformer dictionary folder (gc30M/, gc104M/); needed with --h5ad")
    p.add_argument("--labels", help="dosage: the dosage_sens_tf_labels.csv of the Geneformer example")
    p.add_argument("--label-column", default="disease", help="cardiomyopathy/perturb: obs column of the class")
    p.add_argument("--individual-column", default="individual", help="obs column of the donor (splits by it)")
    p.add_argument("--folds", type=at_least(2), default=5, help="cross-validation folds (at least 2)")
    p.add_argument("--layer", type=int, default=-1, help="Geneformer emb_layer: -1 second-to-last, 0 last")
    p.add_argument("--max-len", type=positive_int, help="tokens per cell (default: the variant's context)")
    p.add_argument("--max-cells", type=positive_int, help="first N cells of --h5ad (or N synthetic cells)")
    p.add_argument("--epochs", type=positive_int, default=1, help="finetune mode: epochs")
    p.add_argument("--lr", type=float, default=5e-5, help="finetune mode: encoder learning rate")
    p.add_argument("--freeze-layers", type=int, default=2, help="finetune mode: lowest layers kept frozen")
    p.add_argument("--start-class", default="dilated", help="perturb: cells to perturb")
    p.add_argument("--goal-class", default="non-failing", help="perturb: the state shifts are measured toward")
    p.add_argument("--perturbation", default="delete", choices=("delete", "overexpress"), help="perturb: what to do")
    p.add_argument(
        "--genes", type=positive_int, default=20, help="perturb: the N genes most often expressed in start cells"
    )
    p.add_argument("--perturb-cells", type=positive_int, default=16, help="perturb: how many start-class cells")
    p.add_argument("--out", help=RESULTS_OUT)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_eval)
