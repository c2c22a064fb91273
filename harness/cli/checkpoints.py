"""Checkpoints: list the variants, make one with random weights, convert between layouts, verify.

Each subcommand's arguments sit beside its handler (``register``)."""

from __future__ import annotations

import json

from harness.cli.common import SEED_HELP, VARIANT_HELP, check_output
from models.registry import VARIANTS


def cmd_variants(args) -> int:
    if args.json:
        print(json.dumps({name: v.summary() for name, v in VARIANTS.items()}, indent=1))
        return 0
    print(
        f"{'variant':17s} {'layers':>6s} {'hidden':>6s} {'heads':>5s} {'ffn':>5s} {'context':>7s} {'vocab':>6s}  "
        "dicts   specials"
    )
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

    check_output(args.out, "new-folder")
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

    check_output(args.out, "new-folder")
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


def register(sub, fmt: dict) -> None:
    p = sub.add_parser("variants", help="list the registered Geneformer variants", **fmt)
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("init", help="write a checkpoint of a variant with seeded random weights", **fmt)
    p.add_argument("--variant", required=True, help=VARIANT_HELP + "; which published config")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
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
