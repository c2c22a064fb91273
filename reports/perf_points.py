"""Performance points, read from perf results alone: each measured point by its shape and GPU, the
speed-ups that pair two points of one run (a ratio never divides two runs' numbers), and how a
point's value and noise are shown. What reports/perf_tables.py, perf_figures.py and training.py
read their numbers through.
"""

from __future__ import annotations

from collections import defaultdict

from harness.perf.noise import NOISE_LIMIT, energy_covered, is_noisy
from harness.precision import PRECISIONS
from reports.document import _fmt, _records, result_gpu


def _key(p: dict) -> tuple:
    return p["variant"], p["backend"], p["precision"], p["layout"], p["batch"], p["seq_len"]


def _measured(p: dict, world_size: int, forward: str = "mlm") -> bool:
    """Measured, on ``world_size`` GPUs, running ``forward`` (records before the encoder-alone
    points ran the full forward)."""
    return p.get("status") == "reported" and p.get("world_size", 1) == world_size and p.get("forward", "mlm") == forward


def perf_points(results: list[dict], world_size: int = 1, forward: str = "mlm") -> dict:
    """(variant, backend, precision, layout, batch, seq_len) -> GPU -> the measured record, for
    runs on ``world_size`` GPUs (one unless a torchrun sweep says otherwise) of the full forward
    (or of ``forward``); the newest run wins."""
    points: defaultdict[tuple, dict] = defaultdict(dict)
    for gpu, _r, p in _records(results, "perf", "point"):
        if _measured(p, world_size, forward):
            points[_key(p)][gpu] = p
    return points


def same_run_pairs(results: list[dict], over, forward: str = "mlm") -> dict:
    """point key -> GPU -> (its point, the point ``over(key)`` names (None: no pair)), both from
    one run (one results file) running ``forward``: a speed-up never divides two runs' numbers.
    The newest run holding both wins."""
    pairs: defaultdict[tuple, dict] = defaultdict(dict)
    for r in results:  # oldest first
        if r["kind"] != "perf":
            continue
        run = {_key(p): p for p in r["records"] if p.get("record") == "point" and _measured(p, 1, forward)}
        for key, p in run.items():
            other = run.get(over(key) or ())
            if other:
                pairs[key][result_gpu(r)] = (p, other)
    return pairs


def same_run_ratios(results: list[dict], over, forward: str = "mlm") -> dict:
    """point key -> GPU -> its cells/s over that of the point ``over(key)`` names, in one run."""
    return {
        key: {gpu: p["cells_per_s"] / other["cells_per_s"] for gpu, (p, other) in by_gpu.items()}
        for key, by_gpu in same_run_pairs(results, over, forward).items()
    }


def best_over_bf16(results: list[dict], forward: str, backends: tuple[str, ...]) -> dict:
    """(GPU, variant, precision) -> (the fastest point of an FP8 precision over ``backends``'
    builds and layouts, the fastest bf16 point of the same variant over them), both from one run:
    each side at its own best (a recipe's speed-up within one build can flatter it: on the H200
    te-fused's FP8 trained 1.05x its own bf16 and still slower than te-packed's bf16). The newest
    run holding both wins."""
    out: dict[tuple, tuple[dict, dict]] = {}
    for r in results:  # oldest first
        if r["kind"] != "perf":
            continue
        fastest: dict[tuple, dict] = {}
        for p in r["records"]:
            if p.get("record") == "point" and p["backend"] in backends and _measured(p, 1, forward):
                key = (p["variant"], p["precision"])
                if key not in fastest or p["cells_per_s"] > fastest[key]["cells_per_s"]:
                    fastest[key] = p
        for (variant, precision), p in fastest.items():
            bf16 = fastest.get((variant, "bf16"))
            if bf16 and PRECISIONS[precision].is_fp8:
                out[(result_gpu(r), variant, precision)] = (p, bf16)
    return out


def ratio_with_noise(p: dict, other: dict, unit: str = "") -> str:
    """A speed-up with the larger range of its two points' repeats; ⚠ where that exceeds the noise limit."""
    spread = max(p.get("spread") or 0.0, other.get("spread") or 0.0)
    text = f"{_fmt(p['cells_per_s'] / other['cells_per_s'])}{unit} (range {spread:.0%})"
    return ("⚠ " if spread > NOISE_LIMIT else "") + text


def with_noise(p: dict) -> str:
    """A point's cells/s with its repeat count and range; ⚠ where the range exceeds the noise limit."""
    text = f"{_fmt(p['cells_per_s'])} (n={p.get('repeats', '?')}, range {p.get('spread') or 0.0:.0%})"
    return ("⚠ " if is_noisy(p) else "") + text


def fp8_over_bf16(key: tuple):
    """The bf16 point of the same backend and shape, for an FP8 point."""
    return (key[0], key[1], "bf16", *key[3:]) if PRECISIONS[key[2]].is_fp8 else None


def point_value(rec: dict, metric: str):
    """A point's value for a figure; energy only where telemetry covered MIN_TELEMETRY_S."""
    if metric == "energy_per_cell_j" and not energy_covered(rec):
        return None
    value = rec.get(metric)
    return value / 2**30 if value is not None and metric == "peak_mem_bytes" else value
