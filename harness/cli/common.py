"""What every subcommand shares: argument types and help, the output check, writing results,
the model source."""

from __future__ import annotations

import argparse

from harness.outputs import check_output  # noqa: F401  (the output rule every handler applies first)
from harness.precision import PRECISIONS
from models.registry import VARIANTS


def at_least(minimum: int):
    """argparse type: a whole number ≥ ``minimum`` (below it is a typo, never a default)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: give a whole number of at least {minimum}")
        return value

    return parse


positive_int = at_least(1)
nonnegative_int = at_least(0)  # 0 meaning none of something, as ``--steps 0``


def write_results(kind, records, weights, config, out) -> list[dict]:
    """One results file, from rank 0 only under torchrun (every rank holds the same records);
    returns the records as written (stamped with their gating flags)."""
    from harness.distributed import context
    from harness.results import make_result, write_result

    result = make_result(kind, records, weights, config)
    if context().is_main:
        print(f"results: {write_result(result, out)}")
    return result["records"]


def model_source(checkpoint: str | None, variant, seed: int):
    """(weights to build backends from, the results file's weights block): a checkpoint
    directory, or seeded random weights of the variant's published config (said aloud)."""
    from models.checkpoint import check_variant, read_checkpoint
    from models.random_weights import random_checkpoint, random_weights_block

    if checkpoint:
        source = read_checkpoint(checkpoint)
        check_variant(source.config, variant, checkpoint)
        return source, source.describe()
    print(f"note: no --checkpoint: random weights (seed {seed}); outputs carry no learned biology")
    return random_checkpoint(variant, seed), random_weights_block(seed)  # no transformers import on TE's path


RESULTS_OUT = "results file (.json) or folder (a new file in it); default results/local/"


VARIANT_HELP = "a Geneformer variant: " + ", ".join(VARIANTS)


SEED_HELP = "seed of the random weights (used when no --checkpoint is given)"
PRECISION_CHOICES = [n for n in PRECISIONS if n != "fp64"]


def compiler_log_to_file(out: str | None = None) -> str:
    """TE compiles small helpers with torch.compile; their recompile warnings are the compiler's
    business, not the user's: they go to a log file beside the results ``out`` names (a .json file
    or a folder; default results/local/), not the terminal, and not into the working folder."""
    import logging
    from pathlib import Path

    from harness.results import DEFAULT_RESULTS_DIR

    where = Path(out) if out is not None else DEFAULT_RESULTS_DIR
    path = (where.parent if where.suffix == ".json" else where) / "gfqual-compiler.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    for name in ("torch._dynamo", "torch._inductor"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    return str(path)
