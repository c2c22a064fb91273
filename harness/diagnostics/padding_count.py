"""Padded tokens over real tokens for the HF engine's batches (rounded to 128) and the HF plain
loop's (rounded to 64), at each one's calibrated budget of results/h200/workload-embed-*-best-h200.json,
on the 559 real celltypist cells x9 (a CPU count, no model):

    python harness/diagnostics/padding_count.py --cells-v1 TOK_V1 --cells-v2 TOK_V2
"""

from __future__ import annotations

import argparse

import numpy as np

from harness.data.batching import SHAPE_MULTIPLE, _round_up, budget_groups
from harness.data.stream import read_tokenized
from harness.perf import plain_loops
from models.registry import get_variant

BUDGETS = {"V1-10M": (131072, 262144), "V2-104M": (65536, 65536), "V2-316M": (65536, 65536)}  # engine, loop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells-v1", required=True)
    ap.add_argument("--cells-v2", required=True)
    args = ap.parse_args()
    for name, (engine_budget, loop_budget) in BUDGETS.items():
        variant = get_variant(name)
        pool = list(read_tokenized(args.cells_v1 if name == "V1-10M" else args.cells_v2, variant)["input_ids"])
        lengths = [len(pool[i % len(pool)]) for i in range(5031)]
        real = sum(lengths)
        groups = budget_groups(lengths, engine_budget, padded=True, step=SHAPE_MULTIPLE)
        engine = sum(len(g) * _round_up(lengths[g[0]], SHAPE_MULTIPLE) for g in groups)
        loop = sum(len(rows) * width for rows, width in plain_loops.padded_groups(np.array(lengths), loop_budget))
        print(
            f"{name}: engine pads {engine / real - 1:.1%} (budget {engine_budget}, to {SHAPE_MULTIPLE}), "
            f"plain loop {loop / real - 1:.1%} (budget {loop_budget}, to {plain_loops.PAD_MULTIPLE})"
        )


if __name__ == "__main__":
    main()
