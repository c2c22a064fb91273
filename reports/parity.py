"""Parity, rendered from parity results only: the standalone report (``gfqual report-parity``:
markdown + error-versus-layer plots) and the qualification report's parity and cell-embedding
sections. They display; the parity and embeddings gates are harness/verdict/'s."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import IO

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from harness.precision import PRECISIONS
from harness.results import tested_identity
from reports.document import (
    NOT_MEASURED,
    Figure,
    Section,
    Table,
    _fmt,
    _records,
    series_style,
)

ZERO_FLOOR = 1e-9  # exact agreement has no logarithm: drawn at this floor, said in the label

ENV_KEYS = ("gpu_name", "driver", "cuda", "torch", "te", "transformers", "NVIDIA_TF32_OVERRIDE", "git_commit")


def _sci(value) -> str:
    """Scientific notation, as the standalone parity report prints every error."""
    if isinstance(value, float):
        return f"{value:.2e}"
    return "—" if value is None else str(value)


def _verdict_table(verdicts: list[dict]) -> list[str]:
    lines = [
        "| variant | backend | precision | verdict | worst stage | worst rel L2 | final max abs | logits top-1 "
        "| first diverging stage / reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        if v["status"] in ("skipped", "error") or "worst_stage" not in v:  # every status renders, none crashes
            status = v["status"] if v["status"] == "skipped" else f"**{v['status']}**"
            lines.append(
                f"| {v['variant']} | {v['backend']} | {v['precision']} | {status} | | | | | {v.get('reason', '')} |"
            )
            continue
        lines.append(
            f"| {v['variant']} | {v['backend']} | {v['precision']} | **{v['status']}** | {v['worst_stage']} | "
            f"{_sci(v['worst_rel_l2'])} | {_sci(v['final_hidden_max_abs'])} | {v['logits_top1']:.4f} | "
            f"{v['first_diverging_stage'] or ''} |"
        )
    return lines


def plot_error_vs_layer(stages: list[dict], variant: str, out: Path | IO[bytes]) -> Path | IO[bytes]:
    """rel L2 of each layer's output against the reference, one line per backend × precision."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    runs = sorted({(r["backend"], r["precision"]) for r in stages if r["variant"] == variant})
    for backend, precision in runs:
        rows = sorted(
            (
                r
                for r in stages
                if (r["variant"], r["backend"], r["precision"]) == (variant, backend, precision)
                and r["stage"].endswith(".output")
                and isinstance(r["rel_l2"], float)
            ),
            key=lambda r: r["layer"],
        )
        values = [max(r["rel_l2"], ZERO_FLOOR) for r in rows]
        ax.plot(
            [r["layer"] for r in rows], values, ms=5, label=f"{backend} {precision}", **series_style(backend, precision)
        )
    ax.set_yscale("log")
    ax.set_xlabel("encoder layer (output)")
    ax.set_ylabel(f"relative L2 error vs HF reference\n(exact = {ZERO_FLOOR:g})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{variant}: error growth across layers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def render_parity_report(results: list[dict], out_dir: str | Path) -> Path:
    """Write ``parity.md`` and one ``parity-<variant>.png`` per variant into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Geneformer HF vs TE parity", ""]
    for index, result in enumerate(results):
        env, weights = result["env"], result["weights"]
        lines += [f"## Run of {result['created']}", ""]
        lines += ["| " + " | ".join(ENV_KEYS) + " |", "|" + "---|" * len(ENV_KEYS)]
        lines.append("| " + " | ".join(_sci(env.get(k)) for k in ENV_KEYS) + " |")
        lines += [
            "",
            f"Weights: `{weights.get('source', 'checkpoint')}`"
            + (f" (seed {weights['seed']}) — {weights.get('note', '')}" if "seed" in weights else ""),
            "",
        ]
        records = result["records"]
        verdicts = [r for r in records if r.get("record") == "verdict"]
        stages = [r for r in records if r.get("record") == "stage"]
        lines += _verdict_table(verdicts) + [""]
        refs = sorted({r["reference"] for r in verdicts if r.get("reference")})
        lines += [f"Reference: {', '.join(refs)}. Tolerances: harness/TOLERANCES.md.", ""]
        for variant in sorted({r["variant"] for r in stages}):
            png = plot_error_vs_layer(stages, variant, out_dir / f"parity-{index}-{variant}.png")
            lines += [f"![{variant} error vs layer]({png.name})", ""]
    path = out_dir / "parity.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def newest_records(results: list[dict], record: str) -> dict[tuple, dict]:
    """The newest parity record of a kind for each (GPU, what was tested, variant, backend,
    precision): a later run replaces an earlier one of the same checkpoint (or random seed) only,
    so a FAIL for one checkpoint is never hidden by a PASS for another."""
    return {
        (gpu, tested_identity(res), r["variant"], r["backend"], r["precision"]): r
        for gpu, res, r in _records(results, "parity", record)
    }


def parity_section(results: list[dict]) -> Section:
    by_gpu: dict[str, dict] = defaultdict(dict)
    stages: dict[str, list] = defaultdict(list)
    for (gpu, *key), newest in newest_records(results, "verdict").items():
        by_gpu[gpu][tuple(key)] = newest  # (tested, variant, backend, precision)
    latest_run: dict[tuple, str] = {}  # each (GPU, variant, backend, precision) plots its newest run only
    for gpu, r, s in _records(results, "parity", "stage"):
        latest_run[(gpu, s["variant"], s["backend"], s["precision"])] = r["created"]
    for gpu, r, s in _records(results, "parity", "stage"):
        if latest_run[(gpu, s["variant"], s["backend"], s["precision"])] == r["created"]:
            stages[gpu].append(s)
    section = Section("Parity: TE against the HF reference")
    for gpu in sorted(by_gpu):
        cells = by_gpu[gpu]
        precisions = sorted({k[3] for k in cells}, key=precision_order)
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
    kernel_table = _attention_kernel_table(results)
    if kernel_table:
        section.tables.append(kernel_table)
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
    return section


def _attention_kernel_table(results: list[dict]) -> Table | None:
    """TE's attention kernel alone (harness/parity/attention_kernel.py): the newest check of each
    GPU, head shape and precision; FP8 attention is TE beta and does not gate."""
    rows = []
    newest = newest_records(results, "attention_kernel")
    for (gpu, _tested, variant, _backend, precision), k in sorted(
        newest.items(), key=lambda kv: (kv[0][0], kv[0][2], precision_order(kv[0][4]))
    ):
        beta = PRECISIONS[precision].experimental
        if k["status"] in ("skipped", "error"):
            verdict = f"{k['status']}: {k['reason']}"
            measured = [NOT_MEASURED] * 3
        else:
            verdict = k["status"].upper() + (f" · {k['violations']}" if k["violations"] else "")
            measured = [_fmt(k["rel_l2"]), _fmt(k["peer_rel_l2"]), _fmt(k["repeat_max_abs"])]
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
        return None
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
    return Table(headers, rows)


def precision_order(p: str) -> int:
    order = list(PRECISIONS)
    return order.index(p) if p in order else len(order)


def embedding_section(results: list[dict]) -> Section:
    rows = []
    for gpu, _r, e in _records(results, "parity", "embedding"):
        rows.append(
            [
                gpu,
                e["variant"],
                e["backend"],
                e["precision"],
                e["n_cells"],
                _fmt(e["rel_l2"]),
                _fmt(e["cos_dist"]),
                e["status"].upper() + (f": {e['reason']}" if e.get("reason") else ""),
            ]
        )
    headers = ["GPU", "variant", "backend", "precision", "cells", "rel L2", "1 − cosine", "verdict"]
    section = Section("Cell embeddings on synthetic cells (HF reference vs candidate)", tables=[Table(headers, rows)])
    if not rows:
        section.text.append(NOT_MEASURED)
    return section


def failed_parity(results: list[dict]) -> set[tuple]:
    """(GPU, variant, backend, precision) whose newest parity verdict failed or errored: their speed
    is the speed of a wrong answer, and the speed-up tables say so. A failed attention kernel check
    (backend None) counts against every TE build of that variant and precision there."""
    failed = ("fail", "error")
    return {
        (gpu, *key) for (gpu, _tested, *key), r in newest_records(results, "verdict").items() if r["status"] in failed
    } | {
        (gpu, variant, None, p)
        for (gpu, _t, variant, _b, p), r in newest_records(results, "attention_kernel").items()
        if r["status"] in failed
    }
