"""Does a recipe train Geneformer like bf16? The answer a team reads, from results only: per GPU and
recipe, what the held-out bands of ``gfqual train-band`` say (yes / no / cannot judge, over the
bands that could judge: not those whose reference learned nothing, nor those it spiked in),
beside its training speed over TE bf16 from the training sweep (each ratio divided within one
run); then every band, with its paired gap. The verdict on each band is the record's
(``harness/parity/training_band.py``), counted by harness/verdict/training.py."""

from __future__ import annotations

from collections import defaultdict

from harness.backend_names import TE_BACKENDS
from harness.parity.band_rule import band_runs
from harness.verdict.training import band_judged_today
from models.registry import get_variant
from reports.document import NOT_MEASURED, Table, _fmt, _records
from reports.parity import precision_order
from reports.perf_points import best_over_bf16, ratio_with_noise

OBJECTIVES = {"mlm": "MLM pretraining", "classify": "cell classifier"}


def newest_bands(results: list[dict]) -> dict[tuple, dict]:
    """(GPU, variant, objective, lr, backend, precision) -> the newest band_verdict (results are
    oldest first), as the verdict judges it from the file's own runs (``band_judged_today``)."""
    out, runs = {}, {}
    for gpu, r, v in _records(results, "parity", "band_verdict"):
        if id(r) not in runs:
            runs[id(r)] = band_runs(r["records"])
        out[(gpu, v["variant"], v["objective"], v.get("lr"), v["backend"], v["precision"])] = band_judged_today(
            r, v, runs[id(r)]
        )
    return out


def _unstable(v: dict) -> bool:
    """A band failed where the reference itself spiked: the learning rate's matter, not the recipe's."""
    return v["status"] == "fail" and bool(v.get("unstable")) and not v.get("inconclusive")


def _answer(v: dict) -> str:
    if v["status"] == "pass":
        return "yes"
    if v["status"] == "error":
        return f"error: {v.get('reason', '')}"
    if _unstable(v):
        return f"unstable at this lr: {v.get('violations', '')}"
    return ("cannot judge: " if v.get("inconclusive") else "no: ") + v.get("violations", "").removeprefix(
        "cannot judge: "
    )


def _speedups(results: list[dict]) -> dict[tuple[str, str], str]:
    """(GPU, FP8 recipe) -> its training speed over TE bf16 at the largest variant measured, best
    against best in one run (``best_over_bf16``: each at its fastest TE build and layout)."""
    best: dict[tuple[str, str], tuple] = {}
    for (gpu, variant, precision), (point, bf16) in best_over_bf16(results, "train", TE_BACKENDS).items():
        size = get_variant(variant)
        rank = size.num_hidden_layers * size.hidden_size
        if (gpu, precision) not in best or rank >= best[(gpu, precision)][0]:
            best[(gpu, precision)] = (
                rank,
                f"{ratio_with_noise(point, bf16, '×')}, {variant}: {point['backend']} {point['layout']} "
                f"over {bf16['backend']} {bf16['layout']}",
            )
    return {k: v[1] for k, v in best.items()}


def _largest_gap(judged: list[tuple[tuple, dict]]) -> str:
    """The largest paired gap over the bands that could judge: a run that left its own seed's
    reference trajectory, which a passing band can hide."""
    gaps = [(v["paired_gap"], k, v) for k, v in judged if "paired_gap" in v]
    if not gaps:
        return "—"
    gap, k, v = max(gaps, key=lambda g: g[0])
    return f"{_fmt(gap)} ({k[1]} {OBJECTIVES.get(k[2], k[2])} lr {k[3]:g}, seed {v['paired_gap_seed']})"


def recipe_table(results: list[dict]) -> Table | None:
    """Per GPU and recipe: trains like the reference? over every band that could judge; the speed-up."""
    bands = newest_bands(results)
    if not bands:
        return None
    speed = _speedups(results)
    by: defaultdict[tuple[str, str], list[tuple[tuple, dict]]] = defaultdict(list)
    for key, v in bands.items():
        by[(key[0], key[5])].append((key, v))
    rows = []
    for (gpu, precision), cases in sorted(by.items(), key=lambda i: (i[0][0], precision_order(i[0][1]))):
        judged = [(k, v) for k, v in cases if not v.get("inconclusive") and not _unstable(v)]
        failed = [k for k, v in judged if v["status"] != "pass"]
        unstable = [k for k, v in cases if _unstable(v)]
        answer = "cannot judge" if not judged else ("no" if failed else "yes")
        answer += f" (fails: {', '.join(f'{k[1]} {k[2]} lr {k[3]:g}' for k in failed)})" if failed else ""
        answer += (
            f" (unstable reference, not counted: {', '.join(f'{k[1]} {k[2]} lr {k[3]:g}' for k in unstable)})"
            if unstable
            else ""
        )
        where = ", ".join(f"{k[1]} {OBJECTIVES.get(k[2], k[2])} lr {k[3]:g}" for k, _ in judged)
        rows.append(
            [
                gpu,
                precision,
                answer,
                f"{len(judged)} of {len(cases)}" + (f": {where}" if where else ""),
                _largest_gap(judged),
                speed.get((gpu, precision), "—" if precision == "bf16" else NOT_MEASURED),
            ]
        )
    headers = [
        "trains like bf16? GPU",
        "recipe",
        "held-out bands passed",
        "bands that could judge",
        "largest paired gap (nats; where)",
        "training speed × TE bf16 (best against best, same run)",
    ]
    return Table(headers, rows)


def band_table(results: list[dict]) -> Table | None:
    """Every band: its answer, the held-out loss and accuracy at the end, and the paired gap."""
    bands = newest_bands(results)
    if not bands:
        return None
    rows = []
    for key in sorted(bands, key=lambda k: (*k[:3], k[3] or 0.0, k[4], precision_order(k[5]))):
        gpu, variant, objective, lr, backend, precision = key
        v = bands[key]
        accuracy = (
            f"{v['final_accuracy_reference']:.3f} / {v['final_accuracy_candidate']:.3f}"
            if objective == "classify" and "final_accuracy_reference" in v
            else "—"
        )
        loss = (
            f"{_fmt(v['final_loss_reference'])} / {_fmt(v['final_loss_candidate'])}"
            if "final_loss_reference" in v
            else NOT_MEASURED
        )
        gap = (
            f"{_fmt(v['paired_gap'])} (seed {v['paired_gap_seed']}, step {v['paired_gap_step']})"
            if "paired_gap" in v
            else "—"
        )
        rows.append(
            [
                gpu,
                variant,
                OBJECTIVES.get(objective, objective),
                f"{lr:g}" if lr is not None else "—",
                f"{backend} {precision}",
                _answer(v),
                loss,
                accuracy,
                gap,
            ]
        )
    headers = [
        "held-out band: GPU",
        "variant",
        "objective",
        "lr",
        "candidate",
        "trains like the reference?",
        "final held-out loss: reference / candidate",
        "final held-out accuracy",
        "largest paired gap (nats)",
    ]
    return Table(headers, rows)
