"""Training in the qualification report, rendered from results only: per GPU, each objective,
variant and precision's gradient and trajectory verdicts (``gfqual train-parity``), the loss curves those
verdicts judge, and training throughput (``gfqual bench --sweep gpu-training``)
with its speed-ups, each divided within one run. The training gate is harness/verdict/training.py's."""

from __future__ import annotations

from collections import defaultdict
from itertools import accumulate

import matplotlib.pyplot as plt

from harness.backend_names import backend_spec
from harness.results import tested_identity
from harness.tolerances import step_loss_difference
from harness.verdict.classify import known_for
from reports.document import (
    NOT_MEASURED,
    Figure,
    Section,
    Table,
    _fmt,
    _png,
    _records,
    figure_legend,
    series_style,
)
from reports.parity import precision_order
from reports.perf_points import (
    fp8_over_bf16,
    perf_points,
    point_value,
    ratio_with_noise,
    same_run_pairs,
    with_noise,
)
from reports.training_band import band_table, recipe_table

HF_BEST = ("hf-sdpa", "bf16", "bucketed")  # HF's fastest training: sdpa, bf16, length-sorted batches (no THD path)


def _gradients_cell(v: dict | None, rows: list[dict]) -> str:
    """A backward verdict, with the limit its worst gradient was held to (from that run's rows)."""
    if v is None:
        return NOT_MEASURED
    if v["status"] in ("skipped", "error"):
        return f"{'skipped' if v['status'] == 'skipped' else 'ERROR'}: {v['reason']}"
    limit = next((r["limit"] for r in rows if r["stage"] == v["worst_stage"] and "limit" in r), None)
    held = f"limit {_fmt(limit)}, bound {_fmt(v['bound'])}" if limit is not None else f"bound {_fmt(v['bound'])}"
    text = f"{v['status'].upper()} · worst {v['worst_stage']} {_fmt(v['worst_rel_l2'])} ({held})"
    if v["failed"]:
        text += f" · {v['failed']} gradients over their limit, first {v['first_diverging_stage']}: {v['violations']}"
    return text


OBJECTIVE_NAMES = {"mlm": "MLM pretraining", "classify": "cell-classifier fine-tuning"}


def _newest(results: list[dict], record: str) -> dict[tuple, tuple[dict, dict]]:
    """(GPU, what was tested, objective, variant, backend, precision) -> (the run, its newest
    ``record`` verdict): a later run replaces an earlier one of that whole key only, so a failure
    for one checkpoint, seed or objective is never hidden by a pass for another."""
    return {
        (gpu, tested_identity(res), v.get("objective", "mlm"), v["variant"], v["backend"], v["precision"]): (res, v)
        for gpu, res, v in _records(results, "parity", record)
    }


def newest_training_verdicts(results: list[dict]) -> list[tuple[str, dict]]:
    """(GPU, verdict) for each case's newest gradient and trajectory verdict: what the section shows."""
    return [
        (key[0], v)
        for record in ("backward_verdict", "trajectory_verdict")
        for key, (_res, v) in _newest(results, record).items()
    ]


def _rows_of(run: dict, record: str, key: tuple) -> list[dict]:
    """The ``record`` rows of one case (``key`` as ``_newest`` gives it) in one run."""
    return [
        r
        for r in run["records"]
        if r.get("record") == record
        and (r.get("objective", "mlm"), r["variant"], r["backend"], r["precision"]) == key[2:]
    ]


def _trajectory_cell(t: dict | None, gpu: str) -> str:
    """The verdict's numbers, and a failure's class where it is a known one (known_failures.json)."""
    if t is None:
        return NOT_MEASURED
    if t["status"] in ("skipped", "error"):
        return f"{'skipped' if t['status'] == 'skipped' else 'ERROR'}: {t['reason']}"
    text = (
        f"{t['status'].upper()} · {t['steps']} steps · loss {_fmt(t['max_step_loss_rel_diff'])} "
        f"(limit {_fmt(t['loss_limit'])}) · final weights {_fmt(t['final_weights_rel_l2'])} "
        f"(limit {_fmt(t['weights_limit'])})"
    )
    known = known_for("training", gpu, t) if t["status"] == "fail" else None
    return (
        text
        + (f" · {t['violations']}" if t["violations"] else "")
        + (f" · class {known['class']}: {known['summary']}" if known else "")
    )


def _losses_cell(t: dict | None) -> str:
    if t is None or "loss_first" not in t:
        return ""
    return f"{_fmt(t['loss_first'])} → {_fmt(t['loss_last_reference'])} / {_fmt(t['loss_last_candidate'])}"


def _newest_trajectory_steps(results: list[dict]) -> dict[tuple, list[dict]]:
    """(GPU, what was tested, objective, variant) -> each case's newest trajectory verdict with its
    per-step rows, from the same run (a figure never mixes a verdict with another run's curve, nor
    one checkpoint's, seed's or objective's curves with another's)."""
    curves: defaultdict[tuple, list] = defaultdict(list)
    for key, (run, verdict) in _newest(results, "trajectory_verdict").items():
        if steps := _rows_of(run, "trajectory_step", key):
            curves[key[:4]].append({"verdict": verdict, "steps": sorted(steps, key=lambda s: s["step"])})
    return curves


def _name(label: str) -> tuple[str, str]:
    """("hf-eager", "fp64") from a record's "hf-eager@fp64 (mixed precision)"."""
    backend, precision = label.split(" ")[0].split("@")
    return backend, precision


def draw_loss_curves(gpu: str, variant: str, cases: list[dict]):
    """Two panels: every model's loss per step (the reference's, each candidate's, each HF peer's),
    and each one's largest per-step difference from the reference so far, as judged (absolute in
    nats below 1 nat, relative above: ``step_loss_difference``), whose last value is what the
    verdict compares with its limit. Labels are "GPU backend precision"."""
    fig, (losses, diffs) = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn: set[str] = set()

    def draw(backend: str, precision: str, values: list[float], reference: list[float]) -> None:
        label = f"{gpu} {backend} {precision}"
        if label in drawn:
            return
        drawn.add(label)
        style = {**series_style(backend, precision, gpu), "markevery": max(1, len(values) // 10), "ms": 4}
        if (backend, precision) == ref_name:  # wide and pale beneath the others, which it should hide
            style |= {"linewidth": 4, "alpha": 0.35, "zorder": 0}
        losses.plot(range(len(values)), values, label=label, **style)
        if (backend, precision) != ref_name:
            judged = list(accumulate((step_loss_difference(r, v) for v, r in zip(values, reference)), max))
            diffs.plot(range(len(judged)), [max(d, 1e-9) for d in judged], label=label, **style)

    ref_name = _name(cases[0]["verdict"]["reference"])
    for case in sorted(cases, key=lambda c: precision_order(c["verdict"]["precision"])):
        v, steps = case["verdict"], case["steps"]
        reference = [s["loss_reference"] for s in steps]
        draw(*ref_name, reference, reference)
        draw(v["backend"], v["precision"], [s["loss_candidate"] for s in steps], reference)
        if all(s.get("loss_peer") is not None for s in steps):
            draw(*_name(v["peer"]), [s["loss_peer"] for s in steps], reference)
    losses.set(xlabel="AdamW step", ylabel="loss (nats)", title=f"{gpu} · {variant}: loss per step")
    diffs.set(
        xlabel="AdamW step",
        ylabel="largest difference from the reference so far\n(nats below 1 nat, relative above; exact = 1e-9)",
        yscale="log",
        title="worst step so far (the verdict judges its end)",
    )
    for ax in (losses, diffs):
        ax.grid(True, which="both", alpha=0.3)
    figure_legend(fig, (losses, diffs))
    return fig


def _speedup(pairs: dict, key: tuple, gpu: str) -> str:
    """One point's speed-up over its pair in the same run, with their noise; "" without a pair."""
    if gpu not in pairs.get(key, {}):
        return ""
    point, other = pairs[key][gpu]
    return ratio_with_noise(point, other, "×")


def _throughput_table(results: list[dict], failing: set[tuple]) -> Table | None:
    """Each training point: tokens/s, cells/s, TFLOP/s against the ceiling, peak memory, and its
    speed over HF's best training (sdpa bf16, bucketed) in the same run; an FP8 point also over TE
    bf16 of the same backend and layout. A TE point whose precision failed training parity on that
    GPU and variant says so: its speed is the speed of a training run that leaves the reference."""
    points = perf_points(results, forward="train")
    if not points:
        return None
    over_hf = same_run_pairs(results, lambda k: (k[0], *HF_BEST, *k[4:]), forward="train")
    over_bf16 = same_run_pairs(results, fp8_over_bf16, forward="train")
    rows = []
    for key in sorted(points, key=lambda k: (k[0], k[1], precision_order(k[2]), k[3:])):
        variant, backend, precision, layout, batch, seq = key
        for gpu, p in sorted(points[key].items()):
            flag = (
                " (training parity fails)"
                if (gpu, variant, precision) in failing and backend_spec(backend).family != "hf"
                else ""
            )
            ceiling = p.get("ceiling_fraction")
            rows.append(
                [
                    gpu,
                    variant,
                    backend,
                    precision,
                    layout,
                    f"{batch} × {seq:,}",
                    f"{p['tokens_per_s']:,.0f}" if p.get("tokens_per_s") else NOT_MEASURED,
                    with_noise(p),
                    _fmt(p.get("tflops")) + (f" ({ceiling:.0%})" if ceiling is not None else ""),
                    _fmt(gib) if (gib := point_value(p, "peak_mem_bytes")) is not None else NOT_MEASURED,
                    _speedup(over_hf, key, gpu),
                    _speedup(over_bf16, key, gpu) + flag,
                ]
            )
    headers = [
        "training step: GPU",
        "variant",
        "backend",
        "precision",
        "layout",
        "batch × context",
        "tokens/s",
        "cells/s (repeats, range)",
        "TFLOP/s (of ceiling)",
        "peak GiB",
        "× HF sdpa bf16 bucketed",
        "× TE bf16",
    ]
    return Table(headers, rows)


def training_section(results: list[dict]) -> Section:
    """The training section: the newest gradient and trajectory verdict of each GPU, checkpoint or
    seed, objective, variant, backend and precision, the loss curves and training throughput."""
    backward, trajectory = _newest(results, "backward_verdict"), _newest(results, "trajectory_verdict")
    section = Section("Training: gradients, trajectories and speed, TE against the HF reference")
    cases = {*backward, *trajectory}
    several = len({k[:2] for k in cases}) > len({k[0] for k in cases})
    rows = []
    order = list(OBJECTIVE_NAMES)
    for key in sorted(
        cases,
        key=lambda k: (*k[:2], order.index(k[2]) if k[2] in order else len(order), *k[3:5], precision_order(k[5])),
    ):
        gpu, tested, objective, variant, backend, precision = key
        b_run, b = backward.get(key, (None, None))
        t = trajectory.get(key, (None, None))[1]
        rows.append(
            [
                gpu,
                OBJECTIVE_NAMES.get(objective, objective),
                f"{variant} · {tested}" if several else variant,
                backend,
                precision,
                _gradients_cell(b, _rows_of(b_run, "backward_stage", key) if b_run else []),
                _trajectory_cell(t, gpu),
                _losses_cell(t),
            ]
        )
    if rows:
        section.tables.append(
            Table(
                [
                    "training parity: GPU",
                    "objective",
                    "variant",
                    "backend",
                    "precision",
                    "gradients: worst rel L2 (limit, bound)",
                    "trajectory: worst step loss difference, final weights' rel L2 (limits)",
                    "loss first → last steps: reference / candidate",
                ],
                rows,
            )
        )
        judged = [(gpu, v) for gpu, v in newest_training_verdicts(results) if "reference" in v]
        for gpu in sorted({g for g, _ in judged}):
            mine = [v for g, v in judged if g == gpu]
            shapes = sorted({(v["cells"], v["seq_len"]) for v in mine if "cells" in v})
            steps = sorted({v["steps"] for v in mine if "steps" in v})
            section.text.append(
                f"{gpu}: each case is {', '.join(f'{c} cells of up to {n} tokens' for c, n in shapes)}; "
                f"reference {', '.join(sorted({v['reference'] for v in mine}))}; trajectories of "
                f"{', '.join(map(str, steps)) or 'no'} AdamW steps (the notebooks' lr 5e-5 with warm-up) on one "
                "batch (MLM pretraining: a fresh 15% mask each step; cell-classifier fine-tuning: "
                "BertForSequenceClassification's seeded head and the same seeded labels), so their end is "
                "memorization of that batch."
            )
        if judged:
            section.text.append(
                "A gradient is judged by its relative L2 against the reference's (a gradient that is zero in "
                "exact arithmetic, such as attention's key bias, against the whole gradient, within the "
                "precision's rounding); each limit is the precision's bound or 1.5× the largest distance HF at the "
                "candidate's precision (the peer) has on the same gradient in any layer, whichever is larger "
                "(rounding crosses a ReLU's kink in whichever layer chance puts it). Bounds and the measurements "
                "behind them: harness/TOLERANCES.md. FP8 recipes quantise the encoder's GEMMs only: the MLM head is "
                "plain PyTorch in every model and never runs in FP8."
            )
    else:
        section.text.append(f"Training parity: {NOT_MEASURED}.")
    recipes, bands = recipe_table(results), band_table(results)
    if recipes and bands:
        section.tables += [recipes, bands]
        section.text.append(
            "Does a recipe train like bf16? `gfqual train-band`: fresh real cells every step, judged on held-out "
            "cells no step trained on, over 3 seeds (each its own random weights, cell order and masks), against "
            "the band HF bf16's seeds span (plus the recipe's allowance; a classifier's accuracy too). A band "
            "whose reference learned nothing beyond the class or gene frequencies cannot judge and fails as "
            "inconclusive. The paired gap sets each seed's run against the reference run of the same seed: a "
            "large one inside a passing band is a run that left its seed's trajectory (reported, not judged). "
            "Random weights: these bands are the first steps of pretraining or fine-tuning from scratch, not "
            "the continued training of a pretrained Geneformer."
        )
    curves = _newest_trajectory_steps(results)
    for (gpu, tested, objective, variant), drawn in sorted(curves.items()):
        name = f"{variant} · {tested}" if several else variant
        what = OBJECTIVE_NAMES.get(objective, objective)
        stem = f"training-{gpu}-{objective}-{variant}" + (f"-{len(section.figures)}" if several else "")
        section.figures.append(
            Figure(
                f"{stem}.png",
                _png(draw_loss_curves(gpu, f"{name}, {what}", drawn)),
                f"{gpu} · {name} · {what}: loss per AdamW step, and each model's largest difference from the "
                "reference so far",
                wide=True,
            )
        )
    failing = {
        (k[0], k[3], k[5])
        for k, (_run, v) in (*backward.items(), *trajectory.items())
        if v["status"] in ("fail", "error")
    }
    speed = _throughput_table(results, failing)
    if speed:
        section.tables.append(speed)
        section.text.append(
            "Training throughput: forward, backward and one AdamW step of the MLM loss on real-length cells, "
            "fp32 master weights with mixed-precision products; TFLOP/s counts 3× the forward's work against "
            "the GPU's measured ceiling. Speed-ups divide two points of one run: over HF's fastest training "
            "(sdpa, bf16, length-sorted batches; HF has no packed path) and, for FP8, over TE bf16 in the same "
            "layout. A precision that fails training parity (either objective) is marked."
        )
    else:
        section.text.append(f"Training throughput: {NOT_MEASURED}.")
    return section
