"""Work meant for a GPU, started on a CPU by mistake: what it would cost here (its tokens at this
CPU's measured forward rate), and its refusal unless ``--force``. Apart from the sweep engine
(harness/perf/sweep.py), which only runs points: the CLI asks this before a sweep or a workload starts.
"""

from __future__ import annotations

import time

from harness.backends import build_backend
from harness.capability import probe
from harness.data.synthetic import synthetic_batch
from harness.precision import get_precision
from models.errors import UsageError
from models.registry import get_variant

CPU_SWEEP_MINUTES = 10  # longer than this on a CPU is a GPU sweep started by mistake


def refuse_gpu_sweep_on_cpu(sweep, force: bool) -> None:
    """A GPU sweep on a CPU would run for hours: refused unless ``--force`` (``refuse_long_cpu_run``).
    A largest-batch search has no fixed points to count: it doubles the batch until memory runs out,
    which on a CPU means filling the host's memory, so it is refused whatever its size."""
    if probe().cuda or force:
        return
    if sweep.max_batch_search:
        raise UsageError(
            f"--sweep {sweep.name} searches the largest batch that fits, doubling it until memory runs out: "
            "on a CPU that fills this machine's memory; run it on a GPU, or pass --force"
        )
    points = sweep.points()
    tokens = sum(p.batch * p.seq_len for p in points) * (sweep.warmup + sweep.repeats)
    what = f"--sweep {sweep.name} is a GPU sweep ({len(points)} points, {tokens / 1e6:.0f} M tokens)"
    refuse_long_cpu_run(what, tokens, sweep.variants[0], force)


def refuse_long_cpu_run(what: str, tokens: int, variant_name: str, force: bool) -> None:
    """Work meant for a GPU, started on a CPU, is refused unless ``--force`` when it would take over
    ``CPU_SWEEP_MINUTES``, with what it would cost: its tokens at this CPU's measured rate for a
    short cell of ``variant_name`` (a lower bound: attention grows faster than the tokens)."""
    if probe().cuda or force or not tokens:
        return
    rate = cpu_tokens_per_s(variant_name)
    if tokens / rate < CPU_SWEEP_MINUTES * 60:
        return
    raise UsageError(
        f"{what}: on this CPU ({rate:.0f} tokens/s for {variant_name} at 256 tokens) it would take at least "
        f"{tokens / rate / 3600:.1f} h; run it on a GPU, or pass --force"
    )


def cpu_tokens_per_s(variant_name: str) -> float:
    """This CPU's forward rate for one 256-token cell of a variant (HF sdpa, fp32)."""
    from models.hf import random_hf_model  # transformers: only when a rate is measured

    variant = get_variant(variant_name)
    backend = build_backend("hf-sdpa", random_hf_model(variant, 0), get_precision("fp32"), "cpu")
    batch = synthetic_batch(variant, 1, 256, seed=0)
    start = time.perf_counter()
    backend.forward(batch)
    return 256 / (time.perf_counter() - start)
