"""Workload benchmarks: the pipelines users run, end to end, on a tokenized dataset, each backend
at its own best settings and held to an independent plain loop (issue 28: best against best).

``embed`` — per (variant, backend, precision): build the backend (timed); a short calibration of
the token budget (``candidate_budgets``: powers of two from 65,536 up to ``equal_budget``, the one
budget every backend also runs at) on a sample of the cells, each budget timed on its second pass,
at the backend's own pad multiple; for a padded backend, then the pad multiple (``PAD_MULTIPLES``)
at the fastest budget, timed the same way; then, at the fastest (budget, pad multiple), the tiny
warm-up that ``gfqual embed`` does and one pass of ``harness.embeddings.extract`` (``gfqual
embed``'s own path: batching, pooling, copies) under GPU telemetry: cells/s, tokens/s, TFLOP/s of
the real cells' encoder work, NVML GPU busy; and one pass at the equal budget (at the chosen pad
multiple) if that was not the fastest. The row records the chosen budget, layout and pad multiple;
every calibration point is a record of its own, naming the setting it tried (``calibrating``).

The anchor is ``plain_loops``: a minimal HF sdpa loop and a minimal ``te.TransformerLayer`` loop
(``harness.perf.plain_loops``, sharing no batching or pooling code with the engine), each at its
own best budget, on the same cells; pipeline efficiency = the engine's cells/s ÷ the plain loop's
of its family (HF backends against the HF loop, TE backends against the TE loop).
``best_against_best`` gives the headline: best TE over best HF of one run, and beside it the ratio
at the equal budget.

``perturb`` — delete (or overexpress) every gene of the first ``cells`` cells
(``harness.downstream.perturb``): perturbations/s and tokens/s, and from that rate a projection of
deleting every gene in ``PROJECTION_CELLS`` cells with the dataset's own lengths.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from harness.backend_names import backend_spec
from harness.backends import build_backend
from harness.capability import probe
from harness.embeddings import (
    CPU_TOKEN_BUDGET,
    batch_rounding,
    default_token_budget,
    extract,
    layers_to_run,
    memory_token_budget,
    synchronize,
    whole_contexts,
)
from harness.perf.flops import forward_flops
from harness.perf.telemetry import Telemetry
from harness.precision import get_precision
from harness.reasons import skipped
from models.registry import Variant

PROJECTION_CELLS = 1500  # the Geneformer paper's perturbation scale: ≈ 60 h on an A100 with the original code


def _free_cached_memory() -> None:
    """Give a released backend's GPU memory back before the next row builds its own."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _skipped(base: dict, backend: str, precision: str) -> dict | None:
    reason = probe().skip_reason(backend, precision)
    return skipped(base, reason) if reason else None


def _base(
    workload: str, variant: Variant, backend_name: str, precision: str, cells: list, cells_from: str, **extra
) -> dict:
    """What every workload row says of what it ran on."""
    return {
        "record": "workload",
        "workload": workload,
        "variant": variant.name,
        "backend": backend_name,
        "precision": precision,
        "cells": len(cells),
        "cells_from": cells_from,
        "mean_length": sum(map(len, cells)) / len(cells),
        **extra,
    }


CALIBRATION_BUDGETS = tuple(1 << k for k in range(16, 21))  # 65,536 to 1,048,576 tokens per batch
CALIBRATION_BATCHES = 3  # the calibration sample holds this many batches of the largest budget tried
EQUAL_BUDGET_VALUES = 1 << 28  # tokens × hidden: the budget every backend got before issue 28 (TE's)
# Pad multiples a padded backend's calibration tries at its fastest budget: 128, what every padded
# batch was rounded to before (``SHAPE_MULTIPLE``), and 64, what HF's plain loop pads to (on real V2
# cells that loop pads 2.6% of the tokens, HF's engine 4.4% at 128: harness/diagnostics/padding_count.py).
PAD_MULTIPLES = (64, 128)


def equal_budget_tokens(variant: Variant) -> int:
    """2^28 values / hidden size in whole contexts: the largest budget calibrations try."""
    return whole_contexts(EQUAL_BUDGET_VALUES // variant.hidden_size, variant)


def equal_budget(backend, variant: Variant) -> int:
    """The one budget every backend is also calibrated at: ``equal_budget_tokens`` within memory
    (what ``gfqual embed`` gave HF and TE alike before; the equal-budget ratio is read there)."""
    return min(memory_token_budget(backend, variant), equal_budget_tokens(variant))


def candidate_budgets(largest: int) -> list[int]:
    """Budgets the calibration tries: powers of two from 65,536 tokens below ``largest``, and it."""
    return sorted({b for b in CALIBRATION_BUDGETS if b < largest} | {largest})


def calibration_sample(cells: list, budgets: list[int]) -> list:
    """Every k-th cell, so that the sample holds ``CALIBRATION_BATCHES`` batches of the largest budget."""
    tokens = sum(map(len, cells))
    step = max(1, tokens // (CALIBRATION_BATCHES * max(budgets)))
    return cells[::step]


def calibrate(run, setting: str, values: list[int], base: dict, sample: list, **fixed) -> list[dict]:
    """``run(**settings)`` → seconds for each of ``values`` of one ``setting`` (``max_tokens`` or
    ``pad_multiple``), the other settings ``fixed``, timed on its second call (shapes met, plans
    built): a ``calibration`` record per value, carrying its settings and ``calibrating`` (which of
    them it varies), ``base`` saying whose."""
    rows = []
    for value in values:
        settings = dict(sorted({**fixed, setting: value}.items()))  # max_tokens, then pad_multiple
        run(**settings)
        seconds = run(**settings)
        rows.append(
            {
                **base,
                "record": "calibration",
                "calibrating": setting,
                "cells": len(sample),
                **settings,
                "seconds": seconds,
                "cells_per_s": len(sample) / seconds,
            }
        )
    return rows


def _fastest(calibration: list[dict]) -> dict:
    return min(calibration, key=lambda r: r["seconds"])


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# A whole pass is timed again until the passes add up to MIN_TIMED_S (at most MAX_PASSES) and the
# median is the result: V1-10M's pass of 5,031 cells takes 0.34 s on the H200, and one such pass
# once measured TE's engine 14% under its calibration at the same budget (at 7a00fa9:
# 11,998 cells/s against 13,923 on the sample); a V2 pass (4.6-13 s) is timed once.
MIN_TIMED_S, MAX_PASSES = 2.0, 5


def timed_passes(measure, passes: list[float] | None = None) -> list[float]:
    """Seconds of each pass (``measure()`` runs one and returns its seconds; ``passes``: those
    already timed), as many as ``MIN_TIMED_S`` and ``MAX_PASSES`` ask."""
    passes = list(passes or [])
    while not passes or (sum(passes) < MIN_TIMED_S and len(passes) < MAX_PASSES):
        passes.append(measure())
    return passes


def spread(passes: list[float]) -> dict:
    """How many whole passes a median came from, and their range over it (records are flat)."""
    return {"passes": len(passes), "passes_range": (max(passes) - min(passes)) / statistics.median(passes)}


def embed_workload(
    variant: Variant,
    backend_name: str,
    precision: str,
    cells: list,
    source,
    cells_from: str,
    max_tokens: int | None = None,
    plain: dict | None = None,
    ceiling_tflops: float | None = None,
) -> list[dict]:
    """One embed workload row and its calibration records (see the module docstring): the
    backend at its best budget (a calibration over ``candidate_budgets`` on a sample, unless
    ``max_tokens`` fixes it) and, padded, its best pad multiple there (over ``PAD_MULTIPLES``), held
    to the plain loop of its family (``plain``: ``plain_anchors`` of ``plain_loops``' records);
    ``ceiling_tflops``: the bf16 matmul ceiling measured in the run."""
    base = _base("embed", variant, backend_name, precision, cells, cells_from)
    skipped = _skipped(base, backend_name, precision)
    if skipped:
        return [skipped]
    start = time.perf_counter()
    backend = build_backend(backend_name, source, get_precision(precision))
    synchronize(backend.device)
    build_s = time.perf_counter() - start
    equal = equal_budget(backend, variant)
    budgets = [max_tokens] if max_tokens else candidate_budgets(equal)
    sample = calibration_sample(cells, budgets)
    layout = backend.input_layout

    def one_pass(max_tokens: int, pad_multiple: int, on: list = sample, model=backend) -> float:
        return _timed(lambda: extract(model, on, variant, max_tokens=max_tokens, pad_multiple=pad_multiple))

    whose = _base("embed", variant, backend_name, precision, sample, cells_from)
    calibration = calibrate(one_pass, "max_tokens", budgets, whose, sample, pad_multiple=batch_rounding(backend))
    fastest = _fastest(calibration)
    if layout == "padded":  # a pack carries no padding: nothing to round
        multiples = sorted({batch_rounding(backend, pad_multiple=m) for m in PAD_MULTIPLES})
        padding = calibrate(one_pass, "pad_multiple", multiples, whose, sample, max_tokens=fastest["max_tokens"])
        calibration += padding
        fastest = _fastest(padding)
    budget, pad = fastest["max_tokens"], fastest["pad_multiple"]
    extract(backend, cells[:2], variant, max_tokens=budget, pad_multiple=pad)
    tokens = sum(map(len, cells))
    with Telemetry() as telemetry:
        passes = timed_passes(lambda: one_pass(budget, pad, cells))
    seconds = statistics.median(passes)
    util = telemetry.summary().get("gpu_util")
    equal_s = seconds if budget == equal else one_pass(equal, pad, cells)
    attention = backend.attention_backend
    default = default_token_budget(backend, variant)
    del backend
    _free_cached_memory()
    anchor = (plain or {}).get(plain_family(backend_name))
    if anchor and anchor["precision"] != precision:  # the loops run bf16: an FP8 row has no anchor
        anchor = None
    anchor_rate = anchor["cells_per_s"] if anchor else None
    tflops = work / seconds / 1e12 if (work := _encoder_work(variant, cells)) else None
    return calibration + [
        {
            **base,
            "status": "reported",
            "attention_backend": attention,
            "max_tokens": budget,
            "budget_from": "--max-tokens" if max_tokens else "calibration (fastest on the sample)",
            "input_layout": layout,
            "pad_multiple": pad,
            "default_max_tokens": default,
            "equal_max_tokens": equal,
            "equal_budget_cells_per_s": len(cells) / equal_s,
            "build_s": build_s,
            "tokens": tokens,
            "seconds": seconds,
            **spread(passes),
            "cells_per_s": len(cells) / seconds,
            "tokens_per_s": tokens / seconds,
            "tflops": tflops,
            "ceiling_tflops": ceiling_tflops,
            "ceiling_fraction": tflops / ceiling_tflops if ceiling_tflops else None,
            "gpu_util_mean": util,
            "plain_loop": anchor["backend"] if anchor else None,
            "plain_loop_cells_per_s": anchor_rate,
            "plain_loop_max_tokens": anchor["max_tokens"] if anchor else None,
            "pipeline_efficiency": len(cells) / seconds / anchor_rate if anchor_rate else None,
        }
    ]


def _encoder_work(variant: Variant, cells: list) -> float:
    """The encoder work the real cells need through the layers an embedding runs (no padding, no
    filler, no head): what any layout must do, so skipping padding is never counted as work."""
    lengths = np.array([len(c) for c in cells], dtype=np.float64)
    full = forward_flops(variant, int(lengths.sum()), int((lengths**2).sum()), head=False)
    return full * layers_to_run(variant, -1) / variant.num_hidden_layers


def plain_family(backend_name: str) -> str:
    """Which plain loop a backend is held to: HF's or TE's."""
    return backend_spec(backend_name).family


LOOPS = {"hf": "hf-loop", "te": "te-loop"}  # the plain loops' names in records, by family


def plain_loops(variant: Variant, source, cells: list, cells_from: str, budgets: list[int] | None = None) -> list:
    """The independent plain loops (``harness.perf.plain_loops``) at bf16 on the GPU (fp32 on a
    CPU) on ``cells``, each at its best budget (calibrated on a sample like the engine): per loop
    its calibration records and a ``plain_loop`` record, or a skip with its reason."""
    from harness.perf import plain_loops as loops

    cap = probe()
    device = cap.device
    precision = "bf16" if cap.cuda else "fp32"
    dtype = get_precision(precision).dtype
    budgets = budgets or (candidate_budgets(equal_budget_tokens(variant)) if cap.cuda else [CPU_TOKEN_BUDGET])
    n_layers = layers_to_run(variant, -1)
    pad_id = variant.special_tokens["<pad>"]
    specials = sorted(variant.special_tokens.values())
    sample = calibration_sample(cells, budgets)
    bert = loops.hf_encoder(source, n_layers, device, dtype)
    runs = {"hf": lambda c, b, bert=bert: loops.hf_loop(bert, c, b, pad_id, specials, device)}
    te_reason = cap.skip_reason("te-packed", precision)
    if te_reason is None:
        te_model = _plain_te_model(source, device, dtype)
        runs["te"] = lambda c, b: loops.te_loop(te_model, c, n_layers, b, pad_id, specials, device, variant.context)
    records = []
    for family, name in LOOPS.items():
        base = {**_base("embed", variant, name, precision, cells, cells_from), "record": "plain_loop"}
        if family not in runs:
            records.append(skipped(base, te_reason))
            continue
        run = runs[family]
        whose = _base("embed", variant, name, precision, sample, cells_from)
        calibration = calibrate(
            lambda max_tokens, run=run: run(sample, max_tokens)[1], "max_tokens", budgets, whose, sample
        )
        budget = _fastest(calibration)["max_tokens"]
        vectors, first = run(cells, budget)
        passes = timed_passes(lambda run=run, budget=budget: run(cells, budget)[1], [first])
        seconds = statistics.median(passes)
        records += calibration
        records.append(
            {
                **base,
                "status": "reported",
                "loop": loops.DESCRIPTIONS[family],
                "max_tokens": budget,
                "seconds": seconds,
                **spread(passes),
                "cells_per_s": len(cells) / seconds,
                "finite": bool(np.isfinite(vectors).all()),
            }
        )
    del bert, runs
    _free_cached_memory()
    return records


def plain_anchors(records: list[dict]) -> dict:
    """The reported plain loops by family (what ``embed_workload`` holds each backend to)."""
    by_name = {r["backend"]: r for r in records if r["record"] == "plain_loop" and r["status"] == "reported"}
    return {family: by_name[name] for family, name in LOOPS.items() if name in by_name}


def _plain_te_model(source, device, dtype):
    """The fused TE model (a stack of ``te.TransformerLayer``, THD) with the source's weights."""
    from harness.backends import te_format_tensors
    from models.te import TEGeneformerForMaskedLM

    tensors, cfg = te_format_tensors(source)
    model = TEGeneformerForMaskedLM(cfg, impl="fused", qkv_format="thd").to(device)
    model.load_checkpoint_tensors(tensors)
    return model.to(dtype).eval()


def best_against_best(records: list[dict]) -> list[dict]:
    """Per variant and precision of TE: the best TE row's cells/s over the best HF row's of the
    same run (each at its own calibrated budget), and beside it the ratio on the calibration
    sample at the largest budget both tried (``equal_budget``: what every backend ran at before)."""
    out = []
    done = [r for r in records if r["record"] == "workload" and r["workload"] == "embed" and r["status"] == "reported"]
    calibration = [r for r in records if r["record"] == "calibration"]
    for variant in dict.fromkeys(r["variant"] for r in done):
        hf = [r for r in done if r["variant"] == variant and plain_family(r["backend"]) == "hf"]
        te = [r for r in done if r["variant"] == variant and plain_family(r["backend"]) == "te"]
        if not hf or not te:
            continue
        best_hf = max(hf, key=lambda r: r["cells_per_s"])
        for precision in dict.fromkeys(r["precision"] for r in te):
            best_te = max((r for r in te if r["precision"] == precision), key=lambda r: r["cells_per_s"])
            out.append(
                {
                    "variant": variant,
                    "precision": precision,
                    "hf": best_hf["backend"],
                    "hf_cells_per_s": best_hf["cells_per_s"],
                    "hf_max_tokens": best_hf["max_tokens"],
                    "te": best_te["backend"],
                    "te_cells_per_s": best_te["cells_per_s"],
                    "te_max_tokens": best_te["max_tokens"],
                    "ratio": best_te["cells_per_s"] / best_hf["cells_per_s"],
                    "equal_budget_ratio": _equal_budget_ratio(calibration, best_te, best_hf),
                }
            )
    return out


def _equal_budget_ratio(calibration: list[dict], te: dict, hf: dict) -> float | None:
    """TE over HF at the equal budget: on all the cells where both rows timed it
    (``equal_budget_cells_per_s``), else on the calibration sample at the largest budget both
    tried (a few batches: that favours TE, whose large packs fill the GPU sooner than HF's)."""
    if te.get("equal_budget_cells_per_s") and hf.get("equal_budget_cells_per_s"):
        if te["equal_max_tokens"] == hf["equal_max_tokens"]:
            return te["equal_budget_cells_per_s"] / hf["equal_budget_cells_per_s"]

    def rates(row):  # the budget calibration's (rows from before the pad-multiple calibration name none)
        same = ("variant", "backend", "precision")
        budgets = [r for r in calibration if r.get("calibrating", "max_tokens") == "max_tokens"]
        return {r["max_tokens"]: r["cells_per_s"] for r in budgets if all(r[k] == row[k] for k in same)}

    te_at, hf_at = rates(te), rates(hf)
    shared = set(te_at) & set(hf_at)
    if not shared:
        return None
    budget = max(shared)
    return te_at[budget] / hf_at[budget]


def perturb_workload(
    variant: Variant,
    backend_name: str,
    precision: str,
    cells: list,
    source,
    cells_from: str,
    all_lengths: list[int],
    mode: str = "delete",
    max_tokens: int | None = None,
) -> dict:
    """Every gene of ``cells`` perturbed, toward the mean embedding of the cells themselves."""
    from harness.downstream.perturb import perturb

    base = _base("perturb", variant, backend_name, precision, cells, cells_from, perturbation=mode)
    skipped = _skipped(base, backend_name, precision)
    if skipped:
        return skipped
    backend = build_backend(backend_name, source, get_precision(precision))
    cells = [list(map(int, c)) for c in cells]
    goal = extract(backend, cells, variant, max_tokens=max_tokens).vectors.mean(axis=0)
    specials = set(variant.special_tokens.values())
    genes = sorted({t for c in cells for t in c if t not in specials})
    perturb(backend, cells[:1], variant, genes[:8], goal, mode, max_tokens=max_tokens)  # warm-up
    result = perturb(backend, cells, variant, genes, goal, mode, max_tokens=max_tokens)
    attention = backend.attention_backend
    del backend
    _free_cached_memory()
    n = len(result.cell)
    tokens_per_s = result.padded_tokens / result.seconds
    n_specials = 2 if variant.has_cls_eos else 0
    lengths = [all_lengths[i % len(all_lengths)] for i in range(PROJECTION_CELLS)]
    projected_tokens = sum(L + (L - n_specials) * (L - 1) for L in lengths)
    return {
        **base,
        "status": "reported",
        "attention_backend": attention,
        "perturbations": n,
        "seconds": result.seconds,
        "perturbations_per_s": n / result.seconds,
        "tokens_per_s": tokens_per_s,
        "padding_fraction": 1 - result.real_tokens / result.padded_tokens,
        "projection_cells": PROJECTION_CELLS,
        "projection_mean_length": sum(lengths) / len(lengths),
        "projected_hours": projected_tokens / tokens_per_s / 3600,
        "projection_note": "every gene deleted in each cell; the original Geneformer perturber: about 60 h "
        "on an A100 (Geneformer paper)",
    }
