"""Throughput, latency and memory sweeps, described as data (a sweep file), run point by point.

A sweep file (JSON) names variants, backends, precisions, batch sizes, sequence lengths and input
layouts; every combination is a point. Each finished point is appended to ``OUT.partial.jsonl`` at
once, so an interrupted sweep resumes where it stopped; a point that runs out of memory or fails
is a row with its status and error, never the end of the sweep, except a kernel fault (CUDA error,
illegal memory access), after which the process's CUDA context is unusable: that row is recorded
and the sweep stops, to resume in a fresh process from the next point. A noisy point is timed again with
more repeats before it is recorded (harness/perf/noise.py). Under torchrun every rank
measures every point on its own GPU at the same time and rank 0 records one row for them all
(``world_size``, throughput summed, the slowest rank's time): the multi-GPU scaling sweep.
Layouts:

``full``            every cell fills ``seq_len`` (no padding): kernel throughput
``padded-context``  realistic cells, each batch padded to ``seq_len``: what a naive pipeline pays
``bucketed``        the same cells sorted by length, each batch padded to its own longest cell
                    (rounded up to 128): what ``gfqual embed`` does
``packed``          the same cells end to end with no padding (TE's THD layout, ``te-packed``),
                    in packs of at most ``batch × seq_len`` tokens: the memory of one padded batch

Realistic cells are a pool of ``pool_cells`` cells: real tokenized cells when the sweep (or
``gfqual bench --cells``) names a tokenized dataset, drawn with replacement when the pool is
larger; else synthetic cells whose lengths are log-normal around the real median. Every row says
which, with the pool's mean length.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.backend_names import FORWARDS, PACKED_BACKENDS, backend_spec
from harness.backends import build_backend
from harness.capability import probe
from harness.data.batching import Batch, PackedBatch, collate, pack_to_budget
from harness.data.synthetic import REAL_MEDIAN_GENES, rank_value_cells
from harness.distributed import all_ranks, context
from harness.perf.ceiling import matmul_tflops
from harness.perf.flops import TRAINING_WORK, batch_flops, useful_flops
from harness.perf.noise import NOISE_LIMIT, needs_remeasure, remeasure_repeats
from harness.perf.telemetry import Telemetry
from harness.perf.timing import Timing, time_batches, warm
from harness.precision import get_precision
from harness.progress import progress_bar, row_head
from harness.reasons import error_message, error_reason, skipped
from harness.results import is_kernel_crash
from harness.training import TrainStep
from models.errors import KernelCrash, UsageError
from models.registry import Variant, get_variant

LAYOUTS = ("full", "padded-context", "bucketed", "packed")
# What a point runs (FORWARDS): the whole model to MLM logits, the encoder alone (what embedding and
# perturbation run: no MLM head, whose logits dominate memory at small widths), or a training step
# (forward and backward of the MLM loss and an AdamW step, in mixed precision: harness/training.py).
SWEEP_DIR = Path(__file__).parent / "sweeps"
BUCKET_MULTIPLE = 128


@dataclass(frozen=True)
class Point:
    variant: str
    backend: str
    precision: str
    layout: str
    batch: int
    seq_len: int
    forward: str = "mlm"

    @property
    def key(self) -> str:
        return "/".join(map(str, asdict(self).values()))


@dataclass
class Sweep:
    name: str
    variants: list[str]
    backends: list[str]
    precisions: list[str]
    batches: list[int]
    seq_lens: list[int | str] = field(default_factory=lambda: ["context"])
    layouts: list[str] = field(default_factory=lambda: ["full"])
    forwards: list[str] = field(default_factory=lambda: ["mlm"])
    warmup: int = 3
    repeats: int = 10
    max_batch_search: bool = False
    seed: int = 0
    pool_cells: int = 256  # realistic layouts time this many cells per repeat
    cells_from: str | None = None  # a tokenized dataset (gfqual tokenize) for real cell lengths

    @classmethod
    def load(cls, spec: str | os.PathLike) -> "Sweep":
        """A sweep file path, or the name of one shipped in harness/perf/sweeps/."""
        path = Path(spec)
        if not path.is_file():
            path = SWEEP_DIR / f"{spec}.json"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SWEEP_DIR.glob("*.json")))
            raise UsageError(f"no sweep file {spec!r} (shipped sweeps: {shipped})")
        data = json.loads(path.read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise UsageError(f"{path}: unknown sweep keys {sorted(unknown)}")
        sweep = cls(**data)
        bad = [lay for lay in sweep.layouts if lay not in LAYOUTS]
        if bad:
            raise UsageError(f"{path}: unknown layouts {bad} (known: {', '.join(LAYOUTS)})")
        bad = [f for f in sweep.forwards if f not in FORWARDS]
        if bad:
            raise UsageError(f"{path}: unknown forwards {bad} (known: {', '.join(FORWARDS)})")
        for v in sweep.variants:
            get_variant(v)
        for b in sweep.backends:
            backend_spec(b)
        return sweep

    def points(self) -> list[Point]:
        out = []
        for v, b, p, lay, n, s, f in itertools.product(
            self.variants, self.backends, self.precisions, self.layouts, self.batches, self.seq_lens, self.forwards
        ):
            seq = get_variant(v).context if s == "context" else int(s)
            out.append(Point(v, b, p, lay, n, seq, f))
        return out


@dataclass
class CellPool:
    cells: list[list[int]]
    source: str  # where the cells came from, for the record

    @property
    def mean_length(self) -> float:
        return float(np.mean([len(c) for c in self.cells]))


def cell_pool(variant: Variant, seq_len: int, n: int, seed: int, cells_from: str | None = None) -> CellPool:
    """``n`` realistic cells of at most ``seq_len`` tokens: real tokenized cells, or synthetic."""
    if cells_from is None:
        return CellPool(
            rank_value_cells(variant, n, seq_len, seed),
            f"synthetic: log-normal lengths around the real median of {REAL_MEDIAN_GENES} genes",
        )
    from harness.data.stream import read_tokenized

    real = [list(c) for c in read_tokenized(cells_from, variant)["input_ids"]]
    if not real:
        raise UsageError(f"{cells_from} holds no cells")
    picks = np.random.default_rng(seed).choice(len(real), size=n, replace=n > len(real))
    cells = [_truncate(real[i], seq_len, variant) for i in picks]
    return CellPool(
        cells,
        f"real: {len(real)} tokenized cells of {cells_from}, {n} drawn{' with replacement' if n > len(real) else ''}",
    )


def _truncate(cell: list[int], seq_len: int, variant: Variant) -> list[int]:
    if len(cell) <= seq_len:
        return cell
    return [*cell[: seq_len - 1], cell[-1]] if variant.has_cls_eos else cell[:seq_len]  # keep <eos>


def layout_batches(
    point: Point, variant: Variant, seed: int, pool: CellPool | None = None
) -> list[Batch | PackedBatch]:
    """The batches one repeat of ``point`` runs; realistic layouts cut them from ``pool``."""
    multiple = get_precision(point.precision).token_multiple
    if point.layout == "full":
        return [collate(rank_value_cells(variant, point.batch, point.seq_len, seed, full=True), variant, multiple)]
    if pool is None:
        raise UsageError(f"the {point.layout} layout cuts its batches from a cell pool (cell_pool)")
    cells = pool.cells
    if point.layout == "packed":
        return pack_to_budget(cells, variant, point.batch * point.seq_len, multiple)
    if point.layout == "bucketed":
        cells = sorted(cells, key=len, reverse=True)
    groups = [cells[i : i + point.batch] for i in range(0, len(cells), point.batch)]
    if point.layout == "padded-context":
        return [collate(g, variant, multiple, length=point.seq_len) for g in groups]
    bucket = math.lcm(multiple, min(BUCKET_MULTIPLE, point.seq_len))
    return [collate(g, variant, bucket) for g in groups]


def step_for(backend, forward: str, variant: Variant):
    """What one pass of a point runs: the backend's full forward, its encoder alone, or a training step."""
    if forward == "encoder":
        return lambda batch: backend.encode(batch, variant.num_hidden_layers)
    if forward == "train":
        return TrainStep(backend, variant)
    return backend.forward


def timed(backend, batches, repeats: int, step) -> tuple[Timing, dict]:
    """``repeats`` timed passes under GPU telemetry: the timing and the telemetry summary."""
    with Telemetry(torch.cuda.current_device() if torch.cuda.is_available() else 0) as telemetry:
        timing = time_batches(backend, batches, repeats, step)
    return timing, telemetry.summary()


class SweepRunner:
    """Runs points, keeping one variant's model and the last backend in memory."""

    def __init__(self, sweep: Sweep, ceiling_tflops: float | None):
        self.sweep = sweep
        self.ceiling = ceiling_tflops
        self._model_key = self._backend_key = None
        self._model = self._backend = None
        self._pools: dict[tuple[str, int], CellPool] = {}

    def _pool(self, point: Point) -> CellPool | None:
        if point.layout == "full":
            return None
        key = (point.variant, point.seq_len)
        if key not in self._pools:
            self._pools[key] = cell_pool(
                get_variant(point.variant), point.seq_len, self.sweep.pool_cells, self.sweep.seed, self.sweep.cells_from
            )
        return self._pools[key]

    def _backend_for(self, point: Point):
        from models.hf import random_hf_model

        if self._model_key != point.variant:
            self._backend = self._backend_key = None
            self._model = random_hf_model(get_variant(point.variant), self.sweep.seed)
            self._model_key = point.variant
        training = point.forward == "train"
        key = (point.backend, point.precision, training)
        if self._backend_key != key:
            self._backend = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._backend = build_backend(point.backend, self._model, get_precision(point.precision), training=training)
            self._backend_key = key
        return self._backend

    def run(self, point: Point) -> dict:
        row = {"record": "point", **asdict(point)}
        reason = probe().skip_reason(point.backend, point.precision)
        if point.layout == "packed" and backend_spec(point.backend).layout != "packed":
            reason = f"packed (THD) batches need {' or '.join(PACKED_BACKENDS)}; {point.backend} takes padded batches"
        if reason:
            return skipped(row, reason)
        variant = get_variant(point.variant)
        try:
            backend = self._backend_for(point)
            pool = self._pool(point)
            batches = layout_batches(point, variant, self.sweep.seed, pool)
            step = step_for(backend, point.forward, variant)
            batches = warm(backend, batches, self.sweep.warmup, step)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            timing, tel = timed(backend, batches, self.sweep.repeats, step)
            remeasured = needs_remeasure(timing, bool(tel))
            if remeasured:
                timing, tel = timed(backend, batches, remeasure_repeats(timing, bool(tel)), step)
        except torch.OutOfMemoryError as exc:
            self._backend = self._backend_key = None
            torch.cuda.empty_cache()
            return skipped(row, f"out of memory: {error_message(exc)}")
        except Exception as exc:  # recorded, and the sweep goes on
            self._backend = self._backend_key = None
            return {**row, "status": "error", "reason": error_reason(exc)}
        cells = sum(b.n_cells for b in batches)
        real = sum(b.real_tokens for b in batches)
        padded = sum(b.input_ids.numel() for b in batches)
        head = point.forward != "encoder"
        work = TRAINING_WORK if point.forward == "train" else 1  # backward: twice the forward's products
        tflops = work * timing.per_s(sum(useful_flops(variant, b, head) for b in batches)) / 1e12
        shape_tflops = work * timing.per_s(sum(batch_flops(variant, b, head) for b in batches)) / 1e12
        energy = tel.get("energy_j")
        return {
            **row,
            "status": "reported",
            "attention_backend": backend.attention_backend,
            "median_ms": timing.median_ms,
            "min_ms": timing.min_ms,
            "max_ms": timing.max_ms,
            "spread": timing.spread,
            "repeats": timing.repeats,
            "remeasured": remeasured,
            "noisy": timing.spread > NOISE_LIMIT,
            "cells": cells,
            "passes": len(batches),
            "cells_per_s": timing.per_s(cells),
            "tokens_per_s": timing.per_s(real),
            "padded_tokens_per_s": timing.per_s(padded),
            "padding_fraction": 1 - real / padded,
            "peak_mem_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
            "tflops": tflops,
            "shape_tflops": shape_tflops,
            "ceiling_tflops": self.ceiling,
            "ceiling_fraction": tflops / self.ceiling if self.ceiling else None,
            "energy_per_cell_j": energy / (cells * timing.repeats) if energy is not None else None,
            **{k: v for k, v in tel.items() if k != "energy_j"},
            **({"cells_source": pool.source, "mean_cell_tokens": pool.mean_length} if pool else {}),
        }

    def max_batch(
        self, variant: str, backend: str, precision: str, seq_len: int, forward: str = "mlm", cap: int = 4096
    ) -> dict:
        """The largest batch of full-length cells one pass of ``forward`` fits: doubling, then bisection."""
        row = {
            "record": "max_batch",
            "variant": variant,
            "backend": backend,
            "precision": precision,
            "layout": "full",
            "seq_len": seq_len,
            "forward": forward,
        }
        reason = probe().skip_reason(backend, precision)
        if reason:
            return skipped(row, reason)

        def fits(n: int) -> bool:
            try:
                point = Point(variant, backend, precision, "full", n, seq_len, forward)
                built = self._backend_for(point)
                warm(
                    built,
                    layout_batches(point, get_variant(variant), 0),
                    1,
                    step_for(built, forward, get_variant(variant)),
                )
                return True
            except torch.OutOfMemoryError:
                self._backend = self._backend_key = None
                torch.cuda.empty_cache()
                return False

        good, bad, n = 0, None, 1
        try:
            while n <= cap and fits(n):
                good, n = n, n * 2
            bad = n if n <= cap else None
            while bad is not None and bad - good > 1:
                n = (good + bad) // 2
                good, bad = (n, bad) if fits(n) else (good, n)
        except Exception as exc:  # not an OOM: a kernel failure is a finding, recorded with its batch
            self._backend = self._backend_key = None
            return {
                **row,
                "status": "error",
                "batch": good,
                "max_batch": good,
                "failed_at_batch": n,
                "reason": error_reason(exc, where=f" at batch {n}"),
            }
        return {**row, "status": "reported", "batch": good, "max_batch": good, "capped": bad is None}


def run_sweep(sweep: Sweep, out: Path, progress=print) -> list[dict]:
    """Run (or resume) a sweep; rows go to ``OUT.partial.jsonl`` as they finish."""
    partial = out.with_name(out.name + ".partial.jsonl")
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[row.get("key")] = row
        progress(f"resuming {partial}: {len(done)} rows already measured")
    ceiling = next((r["ceiling_tflops"] for r in done.values() if r.get("ceiling_tflops")), None)
    if ceiling is None:
        ceiling = matmul_tflops()
    runner = SweepRunner(sweep, ceiling)
    jobs = [(p.key, lambda p=p: runner.run(p)) for p in sweep.points()]
    if sweep.max_batch_search:
        for v, b, pr, s, f in itertools.product(
            sweep.variants, sweep.backends, sweep.precisions, sweep.seq_lens, sweep.forwards
        ):
            seq = get_variant(v).context if s == "context" else int(s)
            jobs.append((f"max_batch/{v}/{b}/{pr}/{seq}/{f}", lambda a=(v, b, pr, seq, f): runner.max_batch(*a)))
    ctx = context()
    out.parent.mkdir(parents=True, exist_ok=True)
    todo = [(key, job) for key, job in jobs if key not in done]
    with (
        open(partial, "a") if ctx.is_main else contextlib.nullcontext() as log,
        progress_bar(len(todo), f"sweep {sweep.name}", unit="point") as bar,
    ):
        for key, job in todo:
            row = {**job(), "key": key}
            if ctx.distributed:
                row = combine_ranks(all_ranks(row))
            if ctx.is_main:
                log.write(json.dumps(row) + "\n")
                log.flush()
                progress(format_row(row))
            done[key] = row
            bar.update(1)
            if row["status"] == "error" and is_kernel_crash(row.get("reason")):
                raise KernelCrash(
                    f"{key}: {row['reason']}. A kernel fault leaves this process's CUDA context "
                    f"unusable, so the sweep stops here with the fault recorded in {partial}; run the "
                    "same command again to resume from the next point"
                )
    return [done[k] for k, _ in jobs]


def combine_ranks(rows: list[dict]) -> dict:
    """One data-parallel row from every rank's own measurement of the same point (each GPU runs
    the same batches at once): throughput and work add up, time and memory are the worst rank's."""
    first = rows[0]
    bad = [(r, row) for r, row in enumerate(rows) if row["status"] != "reported"]
    if bad:
        r, row = bad[0]
        return {**row, "world_size": len(rows), "reason": f"rank {r} of {len(rows)}: {row.get('reason')}"}
    if first["record"] != "point":
        return {
            **first,
            "world_size": len(rows),
            "max_batch": min(row["max_batch"] for row in rows),
            "batch": min(row["batch"] for row in rows),
        }
    total = {
        k: sum(row[k] for row in rows)
        for k in ("cells", "cells_per_s", "tokens_per_s", "padded_tokens_per_s", "tflops", "shape_tflops")
    }
    ceiling = first.get("ceiling_tflops")
    energies = [row.get("energy_per_cell_j") for row in rows]
    return {
        **first,
        **total,
        "median_ms": max(row["median_ms"] for row in rows),
        "max_ms": max(row["max_ms"] for row in rows),
        "min_ms": min(row["min_ms"] for row in rows),
        "spread": max(row["spread"] for row in rows),
        "repeats": min(row["repeats"] for row in rows),
        "remeasured": any(row["remeasured"] for row in rows),
        "noisy": any(row["noisy"] for row in rows),
        "peak_mem_bytes": max((row.get("peak_mem_bytes") or 0) for row in rows) or None,
        "ceiling_fraction": total["tflops"] / (ceiling * len(rows)) if ceiling else None,
        "energy_per_cell_j": sum(energies) / len(energies) if None not in energies else None,
        "world_size": len(rows),  # records are flat: the ranks' spread as the slowest and fastest
        "slowest_rank_cells_per_s": min(row["cells_per_s"] for row in rows),
        "fastest_rank_cells_per_s": max(row["cells_per_s"] for row in rows),
    }


def format_row(r: dict) -> str:
    head = f"{row_head(r)} {r.get('layout', ''):14s} {r.get('forward', 'mlm'):7s}"
    if r["status"] != "reported":
        return f"{head} B={r.get('batch', '-')!s:>4} {r['status'].upper()}: {r.get('reason')}"
    if r["record"] == "max_batch":
        return f"{head} max batch at {r['seq_len']} tokens: {r['max_batch']}{' (cap)' if r['capped'] else ''}"
    frac = f" {r['ceiling_fraction']:.0%} of ceiling" if r.get("ceiling_fraction") else ""
    mem = f" {r['peak_mem_bytes'] / 2**30:.1f} GiB" if r.get("peak_mem_bytes") else ""
    return (
        f"{head} B={r['batch']:>4} S={r['seq_len']}: {r['median_ms']:8.2f} ms  {r['cells_per_s']:8.1f} cells/s  "
        f"{r['tflops']:6.1f} TFLOP/s{frac}{mem}"
    )
