"""The performance tables, from perf results alone: the workloads users run end to end (they
lead), each speed-up of one run over another backend or precision, the input layouts, multi-GPU
scaling, the kernel-time profile, peak memory by forward, the largest batch, and what was not
measured with its reason.
"""

from __future__ import annotations

from collections import defaultdict

from harness.backend_names import backend_spec
from reports.document import NOT_MEASURED, Table, _fmt, _records, result_gpu
from reports.perf_points import perf_points, ratio_with_noise, same_run_pairs

FORWARD_NAMES = {
    "mlm": "to MLM logits",
    "encoder": "encoder output (embedding)",
    "train": "training step (forward, backward, AdamW)",
}


def _efficiency(w: dict) -> str:
    """A row's pipeline efficiency and what it divides by: its plain loop (issue 28 on), or its
    own static forward (rows written before)."""
    if w.get("pipeline_efficiency") is None:
        return NOT_MEASURED
    return f"{w['pipeline_efficiency']:.0%} of {w.get('plain_loop') or 'its static forward'}"


def workload_tables(results: list[dict]) -> list[Table]:
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
                if backend_spec(w["backend"]).family == "hf":
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


def speedup_table(results, points, gpus, num, den, title, failing=frozenset()) -> Table:
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


def layout_table(points, gpus) -> Table:
    """Realistic cells: each way of batching them over TE padding every cell to the context."""
    rows = []
    for key in sorted(points):
        variant, backend, precision, layout, batch, seq = key
        padded = points.get((variant, "te", precision, "padded-context", batch, seq), {})
        if layout not in ("bucketed", "packed") or backend_spec(backend).family != "te":
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


def scaling_table(results, one_gpu) -> Table | None:
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


def kernel_profile_table(results) -> Table | None:
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


def memory_table(results) -> Table | None:
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


def max_batch_table(results) -> Table | None:
    """The largest batch each backend fits, and what stopped the search (memory, its cap, or an error)."""
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
    if not max_rows:
        return None
    return Table(
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


def not_measured_table(results) -> Table | None:
    """Points that did not run: one row per GPU, backend, precision, layout and reason, with the
    variants and batches it hit."""
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
    if not not_run:
        return None
    rows = [
        [gpu, backend, precision, layout, ", ".join(sorted(v)), ", ".join(map(str, sorted(b))), why]
        for (gpu, backend, precision, layout, why), (v, b) in sorted(not_run.items())
    ]
    return Table(["not measured: GPU", "backend", "precision", "layout", "variants", "batches", "why"], rows)
