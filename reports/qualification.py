"""The hardware qualification report: one self-contained HTML page and a markdown twin, rendered
from results files alone (never by running a model).

The report is built once as a list of sections holding tables and figures; the HTML and the
markdown are two renderings of the same sections, so they cannot disagree. Figures are PNGs:
embedded as base64 in the HTML (no network, no CDN), written beside the markdown.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

from harness.perf.noise import MIN_TELEMETRY_S, NOISE_LIMIT, energy_covered, is_noisy
from harness.precision import PRECISIONS
from harness.results import gate_status, tested_identity
from models.registry import VARIANTS
from reports.document import (
    GPU_COLUMNS,
    NOT_MEASURED,
    Figure,
    Section,
    Table,
    _fmt,
    _records,
    result_gpu,
    to_html,
    to_markdown,
)
from reports.downstream import downstream_section
from reports.parity import plot_error_vs_layer
from reports.perf import perf_figures, perf_points, same_run_ratios

ENV_KEYS = ("gpu_name", "driver", "cuda", "torch", "te", "transformers", "git_commit")


# --- sections -------------------------------------------------------------------------------


def environment_section(results: list[dict]) -> Section:
    rows = []
    for r in results:
        w = r["weights"]
        weights = w.get("source") or ", ".join(f"{k}: {v.get('source')}" for k, v in w.items() if isinstance(v, dict))
        rows.append([r["created"], r["kind"], *(_fmt(r["env"].get(k)) for k in ENV_KEYS), weights])
    text = []
    commits = {r["env"].get("git_commit") for r in results}
    te_versions = {r["env"].get("te") for r in results if r["env"].get("te")}
    if len(commits) > 1:
        text.append(
            f"⚠ Mixed code versions: results come from {len(commits)} commits "
            f"({', '.join(sorted(c[:8] for c in commits if c))}); compare rows from different commits with care."
        )
    if len(te_versions) > 1:
        text.append(f"⚠ Mixed TransformerEngine versions: {', '.join(sorted(te_versions))}.")
    if any(r["env"].get("git_dirty") for r in results):
        text.append("⚠ Some results were measured from a working tree with uncommitted changes.")
    if any(r["weights"].get("source") == "random-init" for r in results):
        text.append(
            "Weights: seeded random initialisation of the published configs unless a row says otherwise; "
            "numbers qualify kernels and conversion, not the trained model's biology."
        )
    return Section("Runs and environment", text, [Table(["created", "kind", *ENV_KEYS, "weights"], rows)])


def _newest(results: list[dict], record: str) -> dict[tuple, dict]:
    """The newest parity record of a kind for each (GPU, what was tested, variant, backend,
    precision): a later run replaces an earlier one of the same checkpoint (or random seed) only,
    so a FAIL for one checkpoint is never hidden by a PASS for another."""
    return {
        (gpu, tested_identity(res), r["variant"], r["backend"], r["precision"]): r
        for gpu, res, r in _records(results, "parity", record)
    }


def parity_section(results: list[dict]) -> tuple[Section, dict]:
    by_gpu: dict[str, dict] = defaultdict(dict)
    stages: dict[str, list] = defaultdict(list)
    for (gpu, *key), newest in _newest(results, "verdict").items():
        by_gpu[gpu][tuple(key)] = newest  # (tested, variant, backend, precision)
    latest_run: dict[tuple, str] = {}  # each (GPU, variant, backend, precision) plots its newest run only
    for gpu, r, s in _records(results, "parity", "stage"):
        latest_run[(gpu, s["variant"], s["backend"], s["precision"])] = r["created"]
    for gpu, r, s in _records(results, "parity", "stage"):
        if latest_run[(gpu, s["variant"], s["backend"], s["precision"])] == r["created"]:
            stages[gpu].append(s)
    section = Section("Parity: TE against the HF reference")
    statuses = []
    for gpu in sorted(by_gpu):
        cells = by_gpu[gpu]
        precisions = sorted({k[3] for k in cells}, key=_precision_order)
        several = len({k[0] for k in cells}) > 1  # more than one checkpoint / seed tested on this GPU
        rows = []
        for tested, variant, backend in sorted({k[:3] for k in cells}):
            row = [f"{variant} · {tested}" if several else variant, backend]
            for p in precisions:
                v = cells.get((tested, variant, backend, p))
                beta = p in PRECISIONS and PRECISIONS[p].experimental
                if v is None:
                    row.append(NOT_MEASURED)
                    continue
                if v["status"] == "skipped":
                    row.append(f"skipped: {v['reason']}")
                    continue
                if gated := gate_status(v):
                    statuses.append(gated)
                if v["status"] == "error":
                    text = f"ERROR: {v['reason']}"
                else:
                    where = (
                        f" (first diverging: {v['first_diverging_stage']})" if v.get("first_diverging_stage") else ""
                    )
                    text = f"{v['status'].upper()} · worst {v['worst_stage']} {_fmt(v['worst_rel_l2'])}{where}"
                row.append(text + (" · TE beta, not gating" if beta else ""))
            rows.append(row)
        section.tables.append(Table([f"{gpu}: variant", "backend", *precisions], rows))
        sizes = sorted({(v["n_cells"], v["seq_len"]) for v in cells.values() if "n_cells" in v and "seq_len" in v})
        if sizes:  # how much each verdict rests on: a parity case is a few cells, not a dataset
            section.text.append(
                f"{gpu}: each parity case is judged on "
                + ", ".join(f"{n} cells of up to {s:,} tokens" for n, s in sizes)
                + "."
            )
        for variant in sorted({s["variant"] for s in stages[gpu]}):
            own = [s for s in stages[gpu] if s["variant"] == variant]
            path = io.BytesIO()
            plot_error_vs_layer(own, variant, path)
            section.figures.append(
                Figure(
                    f"parity-{gpu}-{variant}.png",
                    path.getvalue(),
                    f"{gpu} · {variant}: relative L2 error of each layer's output",
                )
            )
    kernel_table, kernel_statuses = _attention_kernel_table(results)
    if kernel_table:
        section.tables.append(kernel_table)
        statuses += kernel_statuses
        section.text.append(
            "Attention kernel alone: TE's DotProductAttention on seeded random Q, K, V of each "
            "variant's head shape, against SDPA in fp64, with PyTorch's bf16 SDPA as the peer; the "
            "same input runs twice. A failure here is TE's kernel on this stack, not the conversion."
        )
    section.text.append(
        "Cells: verdict · worst stage and its relative L2 error against HF fp32 (tolerances: "
        "harness/TOLERANCES.md). The fp32 rows are the conversion gate; bf16 is judged against "
        "HF's own bf16 error; FP8 on normalised RMSE and cosine. FP8 attention (*-dpa) is a TE "
        "beta feature: its verdicts are shown and do not count towards the gate."
    )
    return section, _gate("parity", statuses)


def _attention_kernel_table(results: list[dict]) -> tuple[Table | None, list[str]]:
    """TE's attention kernel alone (harness/parity/attention_kernel.py): the newest check of each
    GPU, head shape and precision; FP8 attention is TE beta and does not gate."""
    rows, statuses = [], []
    newest = _newest(results, "attention_kernel")
    for (gpu, _tested, variant, _backend, precision), k in sorted(
        newest.items(), key=lambda kv: (kv[0][0], kv[0][2], _precision_order(kv[0][4]))
    ):
        beta = PRECISIONS[precision].experimental
        if k["status"] in ("skipped", "error"):
            verdict = f"{k['status']}: {k['reason']}"
            measured = [NOT_MEASURED] * 3
        else:
            verdict = k["status"].upper() + (f" · {k['violations']}" if k["violations"] else "")
            measured = [_fmt(k["rel_l2"]), _fmt(k["peer_rel_l2"]), _fmt(k["repeat_max_abs"])]
        if gated := gate_status(k):
            statuses.append(gated)
        rows.append(
            [
                gpu,
                variant,
                f"{k['heads']} × {k['head_dim']}",
                k["seq_len"],
                precision,
                *measured,
                verdict + (" · TE beta, not gating" if beta else ""),
            ]
        )
    if not rows:
        return None, []
    headers = [
        "attention kernel alone: GPU",
        "variant",
        "heads × dim",
        "tokens",
        "precision",
        "rel L2 vs fp64",
        "bf16 SDPA rel L2",
        "same input twice: max abs diff",
        "verdict",
    ]
    return Table(headers, rows), statuses


def _precision_order(p: str) -> int:
    order = list(PRECISIONS)
    return order.index(p) if p in order else len(order)


def embedding_section(results: list[dict]) -> tuple[Section, dict]:
    rows, statuses = [], []
    for gpu, _r, e in _records(results, "parity", "embedding"):
        statuses.append(e["status"])
        rows.append(
            [
                gpu,
                e["variant"],
                e["backend"],
                e["precision"],
                e["n_cells"],
                _fmt(e["rel_l2"]),
                _fmt(e["cos_dist"]),
                e["status"].upper(),
            ]
        )
    headers = ["GPU", "variant", "backend", "precision", "cells", "rel L2", "1 − cosine", "verdict"]
    section = Section("Cell embeddings on synthetic cells (HF reference vs candidate)", tables=[Table(headers, rows)])
    if not rows:
        section.text.append(NOT_MEASURED)
    return section, _gate("embeddings", statuses)


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
                    f"{w['pipeline_efficiency']:.0%}",
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
    failed_parity = _failed_parity(results)
    for recipe in ("fp8-delayed", "fp8-current", "fp8-delayed-dpa"):
        section.tables.append(
            _speedup_table(
                results, points, gpus, ("te", recipe), ("te", "bf16"), f"TE {recipe} vs TE bf16", failed_parity
            )
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


FORWARD_NAMES = {"mlm": "to MLM logits", "encoder": "encoder output (embedding)"}


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
    """gfqual profile: each kind's share of the kernel time of one forward (what caps a speed-up)."""
    from harness.perf.kernel_kinds import KERNEL_KINDS, OTHER, kind_key

    kinds = [k for k, _ in KERNEL_KINDS] + [OTHER]
    rows = []
    for gpu, _r, p in _records(results, "perf", "kernel_profile"):
        head = [gpu, p["variant"], p["backend"], p["precision"], p["batch"]]
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
            "kernel time per forward: GPU",
            "variant",
            "backend",
            "precision",
            "batch",
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


def _failed_parity(results: list[dict]) -> set[tuple]:
    """(GPU, variant, backend, precision) whose newest parity verdict failed or errored: their speed
    is the speed of a wrong answer, and the speed-up tables say so. A failed attention kernel check
    (backend None) counts against every TE build of that variant and precision there."""
    failed = ("fail", "error")
    return {(gpu, *key) for (gpu, _tested, *key), r in _newest(results, "verdict").items() if r["status"] in failed} | {
        (gpu, variant, None, p)
        for (gpu, _t, variant, _b, p), r in _newest(results, "attention_kernel").items()
        if r["status"] in failed
    }


def _with_noise(p: dict) -> str:
    """A point's cells/s with its repeat count and range; ⚠ where the range exceeds the noise limit."""
    text = f"{_fmt(p['cells_per_s'])} (n={p.get('repeats', '?')}, range {p.get('spread') or 0.0:.0%})"
    return ("⚠ " if is_noisy(p) else "") + text


def _speedup_table(results, points, gpus, num, den, title, failed_parity=frozenset()) -> Table:
    """One row per point of ``num``: its cells/s over ``den``'s at the same shape, in one run."""
    ratios = same_run_ratios(results, lambda k: (k[0], *den, *k[3:]) if k[1:3] == num else None)
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
                        _fmt(ratios[key][g])
                        + (
                            " (fails parity: not counted)"
                            if {(g, variant, backend, precision), (g, variant, None, precision)} & failed_parity
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


def perf_gate(results: list[dict]) -> dict:
    """Newest perf run against the oldest of the same sweep on the same GPU, where both exist."""
    from harness.perf.gate import compare

    groups = defaultdict(list)  # like with like: the same sweep on the same GPU count
    for r in results:
        if r["kind"] == "perf" and "sweep" in r["config"]:
            gpus = r["config"].get("world_size", 1)
            groups[(result_gpu(r), r["config"]["sweep"]["name"], gpus)].append(r)
    pairs = [(g, rs[0], rs[-1]) for g, rs in groups.items() if len(rs) > 1]
    if not pairs:
        return {
            "gate": "performance regression",
            "status": "not evaluated",
            "detail": "one run per GPU and sweep: these are baselines",
        }
    regressed = [
        f"{g[0]} {g[1]}{f' ×{g[2]} GPUs' if g[2] > 1 else ''}: "
        f"{r['variant']} {r['backend']} {r['precision']} B={r['batch']} ×{r['ratio']:.2f}"
        for g, base, run in pairs
        for r in compare(base, run)
        if r["regressed"]
    ]
    return {"gate": "performance regression", "status": "fail" if regressed else "pass", "detail": "; ".join(regressed)}


def _crashes(results: list[dict]) -> list[tuple[str, str]]:
    """(GPU, what crashed) for every perf record that gates: a measurement gates only when it died
    on a kernel fault outside TE beta features (harness.results.gates)."""
    return [
        (
            gpu,
            f"{r['variant']} {r['backend']} {r['precision']}"
            f"{' ' + FORWARD_NAMES[r['forward']] if 'forward' in r else ''}: {r.get('reason')}",
        )
        for res in results
        if res["kind"] == "perf"
        for gpu in [result_gpu(res)]
        for r in res["records"]
        if r.get("gating")
    ]


def reliability_gate(results: list[dict]) -> dict:
    """A kernel that crashes is a failure wherever it happens (a perf point or the largest-batch
    search included), outside TE beta features: a speed table must not sit quietly beside it."""
    crashes = sorted({f"{gpu} {text}" for gpu, text in _crashes(results)})
    if not any(res["kind"] == "perf" for res in results):
        return {"gate": "reliability (no kernel crash)", "status": "not measured", "detail": ""}
    return {
        "gate": "reliability (no kernel crash)",
        "status": "fail" if crashes else "pass",
        "detail": "; ".join(crashes) if crashes else "no crash in any perf run",
    }


def _gate(name: str, statuses: list[str]) -> dict:
    if not statuses:
        return {"gate": name, "status": "not measured", "detail": ""}
    failed = statuses.count("fail")
    return {
        "gate": name,
        "status": "fail" if failed else "pass",
        "detail": f"{failed} of {len(statuses)} failed" if failed else f"{len(statuses)} passed",
    }


def per_gpu_verdicts(results: list[dict]) -> dict[str, str]:
    """Each GPU's own verdict from its gating parity and embedding records (newest per what was
    tested) and its kernel crashes: fail if any failed, pass if some passed, else not measured."""
    statuses: defaultdict[str, list[str | None]] = defaultdict(list)
    for gpu, _what in _crashes(results):
        statuses[gpu].append("fail")
    for (gpu, *_key), r in _newest(results, "verdict").items():
        statuses[gpu].append(gate_status(r))
    for gpu, _res, e in _records(results, "parity", "embedding"):
        statuses[gpu].append(gate_status(e))
    gpus = {result_gpu(r) for r in results}
    return {
        gpu: "fail" if "fail" in statuses[gpu] else ("pass" if "pass" in statuses[gpu] else "not measured")
        for gpu in sorted(gpus)
    }


def not_covered(results: list[dict]) -> list[str]:
    """What a reader might assume the verdict covers and it does not, found from what is missing."""
    gpus = {result_gpu(r) for r in results} - {"CPU"}
    missing = [f"{g}: no results" for g in GPU_COLUMNS if g not in gpus]
    verdicts = _newest(results, "verdict")
    for gpu in sorted(gpus):
        checked = {k[2] for k in verdicts if k[0] == gpu}
        if absent := [v for v in VARIANTS if v not in checked]:
            missing.append(f"{gpu}: no parity for {', '.join(absent)}")
        if not any(result_gpu(r) == gpu for r in results if r["kind"] == "downstream"):
            missing.append(f"{gpu}: downstream tasks")
        if not any(
            result_gpu(r) == gpu and w["record"] in ("workload", "run")
            for r in results
            if r["kind"] == "perf"
            for w in r["records"]
        ):
            missing.append(f"{gpu}: end-to-end workloads")
    by_precision = defaultdict(set)
    for key, r in verdicts.items():
        by_precision[key[4]].add(r["status"])
    missing += [
        f"{p}: skipped wherever asked ({next(r['reason'] for k, r in verdicts.items() if k[4] == p)})"
        for p, seen in sorted(by_precision.items())
        if seen == {"skipped"}
    ]
    if not any(r["weights"].get("source") == "checkpoint" for r in results):
        missing.append(
            "Geneformer's trained weights: every result here uses seeded random weights of the "
            "published configs, so no number here carries learned biology"
        )
    return missing


def _failed_and_open(gates: list[dict]) -> tuple[list[str], list[str]]:
    """The gates that failed, and those not measured or not evaluated."""
    return (
        [g["gate"] for g in gates if g["status"] == "fail"],
        [g["gate"] for g in gates if g["status"] in ("not measured", "not evaluated")],
    )


def verdict_of(gates: list[dict], results: list[dict]) -> dict:
    """The machine-readable verdict (``verdict.json``): overall, per GPU, per gate, not covered."""
    failed, open_ = _failed_and_open(gates)
    gaps = not_covered(results)
    overall = "fail" if failed else ("incomplete" if open_ or gaps else "pass")
    return {
        "overall": overall,
        "per_gpu": per_gpu_verdicts(results),
        "gates": gates,
        "not_covered": gaps,
        "results_files": len(results),
    }


def verdict_section(verdict: dict) -> Section:
    gates = verdict["gates"]
    overall = {"fail": "FAIL", "incomplete": "PASS (incomplete)", "pass": "PASS"}[verdict["overall"]]
    text = [
        f"**Overall: {overall}**",
        "Per GPU: " + "; ".join(f"{g} {v.upper()}" for g, v in verdict["per_gpu"].items()) + ".",
    ]
    failed, open_ = _failed_and_open(gates)
    if failed:
        text.append(f"Failed: {', '.join(failed)}.")
    if open_:
        text.append(f"Not measured or not evaluated: {', '.join(open_)}.")
    if verdict["not_covered"]:
        text.append("Not covered by this verdict: " + "; ".join(verdict["not_covered"]) + ".")
    table = Table(["gate", "verdict", "detail"], [[g["gate"], g["status"].upper(), g["detail"]] for g in gates])
    return Section("Verdict", text, [table])


def build_report(results: list[dict]) -> tuple[list[Section], dict]:
    parity, parity_gate = parity_section(results)
    embeddings, embedding_gate = embedding_section(results)
    downstream, downstream_gate = downstream_section(results)
    verdict = verdict_of(
        [parity_gate, embedding_gate, reliability_gate(results), perf_gate(results), downstream_gate], results
    )
    sections = [
        verdict_section(verdict),
        environment_section(results),
        parity,
        embeddings,
        perf_section(results),
        downstream,
    ]
    return sections, verdict


def render_report(results: list[dict], out_dir: str | Path) -> tuple[Path, Path, dict]:
    """report.html, report.md and verdict.json (for CI) into ``out_dir``; returns the verdict."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, verdict = build_report(results)
    md = out_dir / "report.md"
    md.write_text(to_markdown(sections, out_dir))
    page = out_dir / "report.html"
    page.write_text(to_html(sections))
    (out_dir / "verdict.json").write_text(json.dumps(verdict, indent=1) + "\n")
    return page, md, verdict
