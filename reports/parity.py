"""The parity report: markdown + error-versus-layer plots, rendered from parity results only."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reports.document import series_style  # noqa: E402

ZERO_FLOOR = 1e-9  # exact agreement has no logarithm: drawn at this floor, said in the label

ENV_KEYS = ("gpu_name", "driver", "cuda", "torch", "te", "transformers", "NVIDIA_TF32_OVERRIDE", "git_commit")


def _fmt(value) -> str:
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
            f"{_fmt(v['worst_rel_l2'])} | {_fmt(v['final_hidden_max_abs'])} | {v['logits_top1']:.4f} | "
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
        lines.append("| " + " | ".join(_fmt(env.get(k)) for k in ENV_KEYS) + " |")
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
