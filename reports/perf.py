"""Performance, drawn from perf results alone (never by running a model): the figures, and the
qualification report's performance section (the regression and reliability gates are
harness/verdict/'s).

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

from harness.perf.noise import MIN_TELEMETRY_S, NOISE_LIMIT, energy_covered, is_noisy  # noqa: E402
from harness.precision import PRECISIONS  # noqa: E402
from reports.document import (  # noqa: E402
    GPU_COLUMNS,
    NOT_MEASURED,
    Figure,
    Section,
    Table,
    _fmt,
    _png,
    _records,
    figure_legend,
    result_gpu,
    series_style,
)
from reports.parity import failed_parity  # noqa: E402

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


def ratio_with_noise(p: dict, other: dict, unit: str = "") -> str:
    """A speed-up with the larger range of its two points' repeats; ⚠ where that exceeds the noise limit."""
    spread = max(p.get("spread") or 0.0, other.get("spread") or 0.0)
    text = f"{_fmt(p['cells_per_s'] / other['cells_per_s'])}{unit} (range {spread:.0%})"
    return ("⚠ " if spread > NOISE_LIMIT else "") + text


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


def _efficiency(w: dict) -> str:
    """A row's pipeline efficiency and what it divides by: its plain loop (issue 28 on), or its
    own static forward (rows written before)."""
    if w.get("pipeline_efficiency") is None:
        return NOT_MEASURED
    return f"{w['pipeline_efficiency']:.0%} of {w.get('plain_loop') or 'its static forward'}"


def _workload_tables(results: list[dict]) -> list[Table]:
    """The jobs users run, end to end (``gfqual bench --workload``, ``gfqual embed``): what a user
    will see, so it leads; each speed-up pairs two rows of the same run (same file)."""
    tables = []
    embed, perturb, cli = [], [], []
    for r in results:
        if r["kind"] != "perf":
            continue
        gpu = result_gpu(r)
        rows = [w for w in r["records"] if w["record"] in ("workload", "run")]
        ok = {(w["variant"], w["backend"], w["precision"]): w for w in rows if w.get("status") == "reported"}
        for w in rows:
            if w["record"] == "run":  # gfqual embed itself
                cli.append(
                    [
                        gpu,
                        w["variant"],
                        w["backend"],
                        w["precision"],
                        w.get("world_size", 1),
                        w["cells"],
                        _fmt(w["cells_per_s"]),
                        _fmt(w.get("gpu_util_mean")),
                        _fmt(w.get("startup_s")),
                        _fmt(w.get("startup_imports_s")),
                        r["env"].get("git_commit", "unknown")[:7],
                    ]
                )
                continue
            hf = ok.get((w["variant"], "hf-sdpa", "bf16"))
            if w["status"] != "reported":
                if w["backend"].startswith("hf-"):
                    continue  # an FP8 recipe asked of HF: it has no FP8 path, nothing to show
                measured = [f"{w['status']}: {w['reason']}"] + [NOT_MEASURED] * 4
            elif w["workload"] == "perturb":
                ratio = f"{w['perturbations_per_s'] / hf['perturbations_per_s']:.2f}×" if hf else NOT_MEASURED
                perturb.append(
                    [
                        gpu,
                        w["variant"],
                        f"{w['cells']} cells, {w['perturbations']} deletions",
                        w["backend"],
                        w["precision"],
                        _fmt(w["perturbations_per_s"]),
                        ratio,
                        _fmt(w["projected_hours"]),
                    ]
                )
                continue
            else:
                ratio = f"{w['cells_per_s'] / hf['cells_per_s']:.2f}×" if hf else NOT_MEASURED
                measured = [
                    _fmt(w["cells_per_s"]),
                    ratio,
                    _efficiency(w),
                    _fmt(w.get("gpu_util_mean")),
                    _fmt(w["max_tokens"]),
                ]
            if w["workload"] == "embed":
                embed.append(
                    [
                        gpu,
                        w["variant"],
                        f"{w['cells']} ({w['mean_length']:.0f} tokens)",
                        w["backend"],
                        w["precision"],
                        *measured,
                    ]
                )
    if embed:
        tables.append(
            Table(
                [
                    "embedding end to end: GPU",
                    "variant",
                    "cells (mean length)",
                    "backend",
                    "precision",
                    "cells/s",
                    "vs HF sdpa bf16",
                    "pipeline efficiency",
                    "GPU busy %",
                    "tokens per batch",
                ],
                sorted(embed, key=str),
            )
        )
    if perturb:
        tables.append(
            Table(
                [
                    "perturbation end to end: GPU",
                    "variant",
                    "work",
                    "backend",
                    "precision",
                    "perturbations/s",
                    "vs HF sdpa bf16",
                    "hours for 1,500 cells (projected)",
                ],
                sorted(perturb, key=str),
            )
        )
    if cli:
        tables.append(
            Table(
                [
                    "gfqual embed: GPU",
                    "variant",
                    "backend",
                    "precision",
                    "GPUs",
                    "cells",
                    "cells/s",
                    "GPU busy %",
                    "start-up s",
                    "of which imports s",
                    "commit",
                ],
                sorted(cli, key=str),
            )
        )
    return tables


def perf_section(results: list[dict]) -> Section:
    points = perf_points(results)
    section = Section("Performance")
    section.tables += _workload_tables(results)
    if section.tables:
        section.text.append(
            "Workloads first: the commands users run, end to end on the 559 real celltypist cells repeated to "
            "about 5,000 (and 5,000 synthetic cells), with default flags (token budget from the GPU's memory). "
            "Pipeline efficiency: end-to-end tokens/s over the same batches' forward passes alone; GPU busy: "
            "NVML utilisation during the run. The static sweeps below are the ceiling they are compared against."
        )
    profile = _kernel_profile_table(results)
    if not points:
        section.text.append(NOT_MEASURED)
        section.tables += [profile] if profile else []
        return section
    gpus = [g for g in GPU_COLUMNS] + sorted({g for v in points.values() for g in v} - set(GPU_COLUMNS))
    rows = [
        [*key[:5], *(_with_noise(points[key][g]) if g in points[key] else NOT_MEASURED for g in gpus)]
        for key in sorted(points)
    ]
    section.tables.append(
        Table(["variant", "backend", "precision", "layout", "batch", *(f"{g} cells/s" for g in gpus)], rows)
    )
    noisy = sum(is_noisy(p) for by_gpu in points.values() for p in by_gpu.values())
    section.text.append(
        f"Each cells/s is the median of n timed repeats, with their range ((max − min) / median). ⚠ marks "
        f"the {noisy} of {sum(map(len, points.values()))} points whose repeats vary by more than {NOISE_LIMIT:.0%}: "
        "read them as approximate. Sweeps now time such a point again with three times the repeats before "
        "recording it (harness/perf/noise.py); points recorded before that rule show their first measurement."
    )
    section.tables.append(
        _speedup_table(results, points, gpus, ("te", "bf16"), ("hf-sdpa", "bf16"), "TE bf16 vs HF sdpa bf16")
    )
    failing = failed_parity(results)
    for recipe in ("fp8-delayed", "fp8-current", "fp8-delayed-dpa"):
        section.tables.append(
            _speedup_table(results, points, gpus, ("te", recipe), ("te", "bf16"), f"TE {recipe} vs TE bf16", failing)
        )
    section.tables.append(_layout_table(points, gpus))
    scaling = _scaling_table(results, points)
    if scaling:
        section.tables.append(scaling)
    if profile:
        section.tables.append(profile)
    memory = _memory_table(results)
    if memory:
        section.tables.append(memory)
    max_rows = [
        [
            gpu,
            m["variant"],
            m["backend"],
            m["precision"],
            FORWARD_NAMES[m.get("forward", "mlm")],
            m["seq_len"],
            m.get("max_batch"),
            (
                f"the search's cap: at least {m.get('max_batch')} fit"
                if m.get("capped")
                else "largest that fits (the next batch ran out of memory)"
            )
            if m["status"] == "reported"
            else f"FAIL: the search stopped on an error, not on memory; {m.get('max_batch')} is only the largest "
            f"that ran: {m.get('reason')}",
        ]
        for gpu, _r, m in _records(results, "perf", "max_batch")
    ]
    if max_rows:
        section.tables.append(
            Table(
                [
                    "largest batch: GPU",
                    "variant",
                    "backend",
                    "precision",
                    "forward",
                    "tokens",
                    "cells",
                    "what stopped the search",
                ],
                max_rows,
            )
        )
    not_run: defaultdict[tuple, tuple[set, set]] = defaultdict(
        lambda: (set(), set())
    )  # one row per reason: the variants and batches it hit
    for gpu, _r, p in _records(results, "perf", "point"):
        if p.get("status") != "reported":
            variants, batches = not_run[
                (gpu, p["backend"], p["precision"], p["layout"], f"{p['status']}: {p.get('reason')}")
            ]
            variants.add(p["variant"])
            batches.add(p["batch"])
    if not_run:
        rows = [
            [gpu, backend, precision, layout, ", ".join(sorted(v)), ", ".join(map(str, sorted(b))), why]
            for (gpu, backend, precision, layout, why), (v, b) in sorted(not_run.items())
        ]
        section.tables.append(
            Table(["not measured: GPU", "backend", "precision", "layout", "variants", "batches", "why"], rows)
        )
    captions = {
        "throughput-vs-batch": "throughput vs batch",
        "memory-vs-batch": "peak memory vs batch",
        "energy-per-cell": "energy per cell vs batch",
        "fp8-speedup": "FP8 recipes over bf16",
        "layouts": "cells/s of realistic cells by input layout",
    }
    for stem, png in perf_figures(results).items():
        section.figures.append(
            Figure(
                f"perf-{stem}.png",
                png,
                f"{captions[stem]} (solid / plain: H100; dashed / hatched: other GPUs)",
                wide=True,
            )
        )
    short = sum(
        p.get("energy_per_cell_j") is not None and not energy_covered(p)
        for by_gpu in points.values()
        for p in by_gpu.values()
    )
    if short:
        section.text.append(
            f"Energy per cell is drawn only where GPU telemetry covered at least {MIN_TELEMETRY_S:.0f} s; "
            f"{short} points measured over less are left out of that figure."
        )
    section.text.append(
        "Throughput is cells per second at each model's full context unless the layout says otherwise "
        "(padded-context: realistic cells padded to the context; packed: end to end, no padding (TE THD); "
        "bucketed: sorted by length, padded "
        "to each batch's longest). Timing: CUDA events, median of repeats after warm-up."
    )
    return section


FORWARD_NAMES = {
    "mlm": "to MLM logits",
    "encoder": "encoder output (embedding)",
    "train": "training step (forward, backward, AdamW)",
}


def _memory_table(results) -> Table | None:
    """Peak memory of the full forward (MLM logits) beside the encoder alone (what embedding and
    perturbation run), at the same shape: how much of the memory figures the logits are."""
    encoder = perf_points(results, forward="encoder")
    mlm = perf_points(results)
    rows = []
    for key in sorted(encoder):
        for gpu, e in sorted(encoder[key].items()):
            m = mlm.get(key, {}).get(gpu)
            if e.get("peak_mem_bytes") is None or m is None or m.get("peak_mem_bytes") is None:
                continue
            rows.append(
                [
                    gpu,
                    key[0],
                    key[1],
                    key[2],
                    key[4],
                    key[5],
                    f"{m['peak_mem_bytes'] / 2**30:.2f}",
                    f"{e['peak_mem_bytes'] / 2**30:.2f}",
                    f"{1 - e['peak_mem_bytes'] / m['peak_mem_bytes']:.0%}",
                ]
            )
    if not rows:
        return None
    return Table(
        [
            "peak memory: GPU",
            "variant",
            "backend",
            "precision",
            "batch",
            "tokens",
            "to MLM logits GiB",
            "encoder output GiB",
            "share of the peak the logits take",
        ],
        rows,
    )


def _kernel_profile_table(results) -> Table | None:
    """gfqual profile: each kind's share of the kernel time of one pass, a forward or a training
    step (what caps a speed-up)."""
    from harness.perf.kernel_kinds import KERNEL_KINDS, OTHER, kind_key

    kinds = [k for k, _ in KERNEL_KINDS] + [OTHER]
    rows = []
    for gpu, _r, p in _records(results, "perf", "kernel_profile"):
        head = [
            gpu,
            p["variant"],
            p["backend"],
            p["precision"],
            FORWARD_NAMES[p.get("forward", "mlm")],
            p["batch"],
            p["seq_len"],
        ]
        if p["status"] != "reported":
            rows.append([*head, f"{p['status']}: {p['reason']}", *[NOT_MEASURED] * len(kinds)])
            continue
        rows.append(
            [
                *head,
                _fmt(p["kernel_ms"]),
                *(f"{_fmt(p[kind_key(k)])} ({p[kind_key(k)] / p['kernel_ms']:.0%})" for k in kinds),
            ]
        )
    if not rows:
        return None
    return Table(
        [
            "kernel time per pass: GPU",
            "variant",
            "backend",
            "precision",
            "pass",
            "batch",
            "tokens",
            "total ms",
            *(f"{k} ms" for k in kinds),
        ],
        sorted(rows, key=str),
    )


def _scaling_table(results, one_gpu) -> Table | None:
    """torchrun sweeps: cells/s on N GPUs against the same point on one GPU of the same kind."""
    rows = []
    for gpu, _r, p in _records(results, "perf", "point"):
        n = p.get("world_size", 1)
        if n == 1 or p.get("status") != "reported":
            continue
        key = (p["variant"], p["backend"], p["precision"], p["layout"], p["batch"], p["seq_len"])
        single = one_gpu.get(key, {}).get(gpu)
        speedup = p["cells_per_s"] / single["cells_per_s"] if single else None
        rows.append(
            [
                gpu,
                *key[:5],
                n,
                _fmt(p["cells_per_s"]),
                _fmt(speedup) if speedup else NOT_MEASURED,
                _fmt(speedup / n) if speedup else NOT_MEASURED,
            ]
        )
    if not rows:
        return None
    return Table(
        [
            "scaling: GPU",
            "variant",
            "backend",
            "precision",
            "layout",
            "batch per GPU",
            "GPUs",
            "cells/s",
            "over 1 GPU",
            "efficiency",
        ],
        sorted(rows, key=str),
    )


def _layout_table(points, gpus) -> Table:
    """Realistic cells: each way of batching them over TE padding every cell to the context."""
    rows = []
    for key in sorted(points):
        variant, backend, precision, layout, batch, seq = key
        padded = points.get((variant, "te", precision, "padded-context", batch, seq), {})
        if layout not in ("bucketed", "packed") or not backend.startswith("te"):
            continue
        rows.append(
            [
                variant,
                precision,
                f"{backend} {layout}",
                batch,
                *(
                    _fmt(points[key][g]["cells_per_s"] / padded[g]["cells_per_s"])
                    if g in points[key] and g in padded
                    else NOT_MEASURED
                    for g in gpus
                ),
            ]
        )
    return Table(
        ["over TE padded to the context: variant", "precision", "batching", "batch", *(f"{g} speed-up" for g in gpus)],
        rows,
    )


def _with_noise(p: dict) -> str:
    """A point's cells/s with its repeat count and range; ⚠ where the range exceeds the noise limit."""
    text = f"{_fmt(p['cells_per_s'])} (n={p.get('repeats', '?')}, range {p.get('spread') or 0.0:.0%})"
    return ("⚠ " if is_noisy(p) else "") + text


def _speedup_table(results, points, gpus, num, den, title, failing=frozenset()) -> Table:
    """One row per point of ``num``: its cells/s over ``den``'s at the same shape, in one run."""
    ratios = same_run_pairs(results, lambda k: (k[0], *den, *k[3:]) if k[1:3] == num else None)
    rows = []
    for key in sorted(points):
        variant, backend, precision, layout, batch, seq = key
        if (backend, precision) != num:
            continue
        rows.append(
            [
                variant,
                layout,
                batch,
                *(
                    (
                        ratio_with_noise(*ratios[key][g])
                        + (
                            " (fails parity: not counted)"
                            if {(g, variant, backend, precision), (g, variant, None, precision)} & failing
                            else ""
                        )
                    )
                    if g in ratios.get(key, {})
                    else NOT_MEASURED
                    for g in gpus
                ),
            ]
        )
    return Table([f"{title}: variant", "layout", "batch", *(f"{g} speed-up (one run)" for g in gpus)], rows)
