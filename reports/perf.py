"""Performance figures, drawn from perf results alone (never by running a model).

``gfqual report-perf`` writes them as PNG files beside a GPU's results; the qualification report
embeds the same figures. Four are asked for by hardware qualification — throughput vs batch, peak
memory vs batch, the FP8 speed-up over bf16 and energy per cell — and one shows what the input
layout (padding, bucketing, packing) does to cells/s on realistic cells. A ratio divides two points
of one run; energy is drawn only where GPU telemetry covered at least MIN_TELEMETRY_S
(harness/perf/noise.py).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.perf.noise import energy_covered  # noqa: E402
from harness.precision import PRECISIONS  # noqa: E402
from reports.document import _png, _records, figure_legend, result_gpu, series_style  # noqa: E402

VS_BATCH = {  # file stem -> (record field, axis label)
    "throughput-vs-batch": ("cells_per_s", "throughput (cells/s)"),
    "memory-vs-batch": ("peak_mem_bytes", "peak memory (GiB)"),
    "energy-per-cell": ("energy_per_cell_j", "energy per cell (J)"),
}
LAYOUT_ORDER = ("padded-context", "bucketed", "packed")


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


def same_run_ratios(results: list[dict], over) -> dict:
    """point key -> GPU -> its cells/s over that of the point ``over(key)`` names (None: no ratio),
    both points from one run (one results file): a speed-up never divides two runs' numbers. The
    newest run holding both wins."""
    ratios: defaultdict[tuple, dict] = defaultdict(dict)
    for r in results:  # oldest first
        if r["kind"] != "perf":
            continue
        run = {_key(p): p for p in r["records"] if p.get("record") == "point" and _measured(p, 1)}
        for key, p in run.items():
            other = run.get(over(key) or ())
            if other:
                ratios[key][result_gpu(r)] = p["cells_per_s"] / other["cells_per_s"]
    return ratios


def fp8_over_bf16(key: tuple):
    """The bf16 point of the same backend and shape, for an FP8 point."""
    return (key[0], key[1], "bf16", *key[3:]) if PRECISIONS[key[2]].is_fp8 else None


def _variant_axes(variants: list[str], height: float = 3.8):
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(4.6 * max(1, len(variants)), height), squeeze=False)
    return fig, axes[0]


def metric_vs_batch(points: dict, metric: str, label: str) -> bytes:
    return _png(draw_metric_vs_batch(points, metric, label))


def _value(rec: dict, metric: str):
    """A point's value for a figure; energy only where telemetry covered MIN_TELEMETRY_S."""
    if metric == "energy_per_cell_j" and not energy_covered(rec):
        return None
    value = rec.get(metric)
    return value / 2**30 if value is not None and metric == "peak_mem_bytes" else value


def draw_metric_vs_batch(points: dict, metric: str, label: str):
    """One panel per variant, one line per (GPU, backend, precision); full-context cells only."""
    variants = sorted({k[0] for k in points if k[3] == "full"})
    fig, axes = _variant_axes(variants)
    for ax, variant in zip(axes, variants):
        series = defaultdict(list)
        for key, by_gpu in points.items():
            if key[0] != variant or key[3] != "full":
                continue
            for gpu, rec in by_gpu.items():
                value = _value(rec, metric)
                if value is not None:
                    series[(gpu, key[1], key[2])].append((key[4], value))
        for (gpu, backend, precision), xy in sorted(series.items()):
            xy.sort()
            ax.plot(*zip(*xy), ms=5, label=f"{gpu} {backend} {precision}", **series_style(backend, precision, gpu))
        ax.set(title=variant, xlabel="batch (cells)")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(label)
    figure_legend(fig, axes)
    return fig


def fp8_speedup(results: list[dict]) -> bytes:
    return _png(draw_fp8_speedup(results))


def draw_fp8_speedup(results: list[dict]):
    """Each FP8 recipe's cells/s over the same backend's bf16 in the same run, per batch (full context)."""
    ratios = {k: v for k, v in same_run_ratios(results, fp8_over_bf16).items() if k[3] == "full"}
    variants = sorted({k[0] for k in ratios})
    fig, axes = _variant_axes(variants)
    for ax, variant in zip(axes, variants):
        series = defaultdict(list)
        for (v, backend, precision, _layout, batch, _seq), by_gpu in ratios.items():
            if v == variant:
                for gpu, ratio in by_gpu.items():
                    series[(gpu, backend, precision)].append((batch, ratio))
        for (gpu, backend, precision), xy in sorted(series.items()):
            xy.sort()
            ax.plot(*zip(*xy), ms=5, label=f"{gpu} {backend} {precision}", **series_style(backend, precision, gpu))
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(title=variant, xlabel="batch (cells)")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("cells/s over the same backend in bf16")
    figure_legend(fig, axes)
    return fig


def layouts(points: dict) -> bytes:
    """Cells/s of realistic cells by input layout: one bar per (GPU, backend, batch)."""
    keys = [k for k in points if k[3] in LAYOUT_ORDER]
    variants = sorted({k[0] for k in keys})
    fig, axes = _variant_axes(variants, height=4.2)
    for ax, variant in zip(axes, variants):
        bars = sorted({(gpu, k[1], k[2], k[4]) for k in keys if k[0] == variant for gpu in points[k]})
        width = 0.8 / max(1, len(bars))
        for i, (gpu, backend, precision, batch) in enumerate(bars):
            heights = [
                next(
                    (
                        points[k][gpu]["cells_per_s"]
                        for k in keys
                        if k[0] == variant
                        and k[1] == backend
                        and k[2] == precision
                        and k[3] == lay
                        and k[4] == batch
                        and gpu in points[k]
                    ),
                    0.0,
                )
                for lay in LAYOUT_ORDER
            ]
            style = series_style(backend, precision, gpu)
            ax.bar(
                [j + i * width for j in range(len(LAYOUT_ORDER))],
                heights,
                width,
                color=style["color"],
                label=f"{gpu} {backend} {precision} B={batch}",
                edgecolor="black",
                linewidth=0.4,
                hatch=("" if gpu == "H100" else "//") + "." * sorted({b[3] for b in bars}).index(batch),
            )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(LAYOUT_ORDER))], LAYOUT_ORDER)
        ax.set(title=f"{variant}: realistic cells")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("cells/s (0: layout not run by that backend)")
    figure_legend(fig, axes)
    return _png(fig)


def perf_figures(results: list[dict]) -> dict[str, bytes]:
    """File stem -> PNG bytes, for every figure the results have data for."""
    points = perf_points(results)
    figures = {}
    if any(k[3] == "full" for k in points):
        figures.update({stem: metric_vs_batch(points, *spec) for stem, spec in VS_BATCH.items()})
    if any(k[3] == "full" for k in same_run_ratios(results, fp8_over_bf16)):
        figures["fp8-speedup"] = fp8_speedup(results)
    if any(k[3] in LAYOUT_ORDER for k in points):
        figures["layouts"] = layouts(points)
    return figures


def render_perf_plots(results: list[dict], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stem, png in perf_figures(results).items():
        (out / f"{stem}.png").write_bytes(png)
    return out
