"""The performance figures, drawn from perf points alone. Four are asked for by hardware
qualification — throughput vs batch, peak memory vs batch, the FP8 speed-up over bf16 and energy
per cell — and one shows what the input layout (padding, bucketing, packing) does to cells/s on
realistic cells. ``gfqual report-perf`` writes them as PNG files beside a GPU's results; the
qualification report embeds the same figures.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from reports.document import _png, figure_legend, series_style
from reports.perf_points import fp8_over_bf16, perf_points, point_value, same_run_ratios

VS_BATCH = {  # file stem -> (record field, axis label)
    "throughput-vs-batch": ("cells_per_s", "throughput (cells/s)"),
    "memory-vs-batch": ("peak_mem_bytes", "peak memory (GiB)"),
    "energy-per-cell": ("energy_per_cell_j", "energy per cell (J)"),
}


LAYOUT_ORDER = ("padded-context", "bucketed", "packed")


def _variant_axes(variants: list[str], height: float = 3.8):
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(4.6 * max(1, len(variants)), height), squeeze=False)
    return fig, axes[0]


def metric_vs_batch(points: dict, metric: str, label: str) -> bytes:
    return _png(draw_metric_vs_batch(points, metric, label))


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
                value = point_value(rec, metric)
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
