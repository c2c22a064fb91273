"""Performance in the qualification report: its section, composed from the tables
(reports/perf_tables.py) and figures (reports/perf_figures.py) of the perf points
(reports/perf_points.py), all drawn from perf results alone (never by running a model). The
regression and reliability gates are harness/verdict/'s. A ratio divides two points of one run;
energy is drawn only where GPU telemetry covered at least MIN_TELEMETRY_S (harness/perf/noise.py).
"""

from __future__ import annotations

from harness.perf.noise import MIN_TELEMETRY_S, NOISE_LIMIT, energy_covered, is_noisy
from reports.document import GPU_COLUMNS, NOT_MEASURED, Figure, Section, Table
from reports.parity import failed_parity
from reports.perf_figures import perf_figures
from reports.perf_points import perf_points, with_noise
from reports.perf_tables import (
    kernel_profile_table,
    layout_table,
    max_batch_table,
    memory_table,
    not_measured_table,
    scaling_table,
    speedup_table,
    workload_tables,
)


def perf_section(results: list[dict]) -> Section:
    points = perf_points(results)
    section = Section("Performance")
    section.tables += workload_tables(results)
    if section.tables:
        section.text.append(
            "Workloads first: the commands users run, end to end on the 559 real celltypist cells repeated to "
            "about 5,000 (and 5,000 synthetic cells), with default flags (token budget from the GPU's memory). "
            "Pipeline efficiency: end-to-end tokens/s over the same batches' forward passes alone; GPU busy: "
            "NVML utilisation during the run. The static sweeps below are the ceiling they are compared against."
        )
    profile = kernel_profile_table(results)
    if not points:
        section.text.append(NOT_MEASURED)
        section.tables += [profile] if profile else []
        return section
    gpus = [g for g in GPU_COLUMNS] + sorted({g for v in points.values() for g in v} - set(GPU_COLUMNS))
    rows = [
        [*key[:5], *(with_noise(points[key][g]) if g in points[key] else NOT_MEASURED for g in gpus)]
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
        speedup_table(results, points, gpus, ("te", "bf16"), ("hf-sdpa", "bf16"), "TE bf16 vs HF sdpa bf16")
    )
    failing = failed_parity(results)
    for recipe in ("fp8-delayed", "fp8-current", "fp8-delayed-dpa"):
        section.tables.append(
            speedup_table(results, points, gpus, ("te", recipe), ("te", "bf16"), f"TE {recipe} vs TE bf16", failing)
        )
    section.tables.append(layout_table(points, gpus))
    for table in (
        scaling_table(results, points),
        profile,
        memory_table(results),
        max_batch_table(results),
        not_measured_table(results),
    ):
        if table:
            section.tables.append(table)
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
