"""A training band's results file (``gfqual train-band``): its ``weights`` and ``config`` blocks,
several files of one band (seeds run in parallel, one process or device call each) joined into
one, and a file's runs judged again by today's rule. The runs and the rule are
``training_band.py``'s; this module only reads and writes what they leave."""

from __future__ import annotations

from dataclasses import asdict

from harness.environment import environment
from harness.parity.band_rule import band_runs
from harness.parity.training_band import SPLIT_SEED, BandSpec, CellPool, band_verdicts, baselines
from harness.results import make_result, now_utc
from models.errors import UsageError
from models.random_weights import random_weights_block
from models.registry import get_variant


def join_runs(results: list[dict]) -> dict:
    """Several train-band files of one band, each a run of other seeds (made in parallel, one
    process or device call per seed), as one file: the same spec but for the seeds, which must not
    overlap and together form one run of seeds; the same GPU and software. The first file's
    ``env`` and the earliest ``created`` are kept (``rejudge`` names every file)."""
    if len(results) == 1:
        return results[0]
    unseeded = {"seeds", "first_seed"}
    first = results[0]
    same = {k: v for k, v in first["config"]["spec"].items() if k not in unseeded}
    seeds: list[int] = []
    for r in results:
        name = r.get("_source", {}).get("file", "a file")
        spec = r["config"]["spec"]
        differs = sorted(k for k in same if spec.get(k) != same[k])
        if differs:
            raise UsageError(f"{name} is another band ({', '.join(differs)} differ): join only seeds of one band")
        stack = [k for k in ("gpu_name", "te_version", "torch", "git_commit") if r["env"].get(k) != first["env"].get(k)]
        if stack:
            raise UsageError(
                f"{name} ran on another machine or code ({', '.join(stack)} differ): join runs of one setup"
            )
        seeds += range(spec["first_seed"], spec["first_seed"] + spec["seeds"])
    if len(set(seeds)) != len(seeds) or sorted(seeds) != list(range(min(seeds), max(seeds) + 1)):
        raise UsageError(f"the files' seeds {sorted(seeds)} overlap or leave a gap: join files whose seeds follow on")
    records = [x for r in results for x in r["records"] if x["record"] != "band_verdict"]
    errors = [x for r in results for x in r["records"] if x["record"] == "band_verdict" and x["status"] == "error"]
    spec = {**first["config"]["spec"], "first_seed": min(seeds), "seeds": len(seeds)}
    created = min(r["created"] for r in results)
    return {**first, "created": created, "config": {**first["config"], "spec": spec}, "records": records + errors}


def rejudge(results: list[dict], pool: CellPool) -> dict:
    """Train-band results judged again by today's rule, from their own held-out rows: the runs
    are not repeated, so the file keeps where and when they ran (``env``, ``created``) and
    ``config.rejudged`` says by which code and from which files' bytes. Several files of one band
    (other seeds of it, run in parallel) are joined first (``join_runs``). ``pool`` must be the
    run's own (the same cells, split the same way): the classifier's majority share comes from it.
    A verdict that was an error stays one (its runs left no rows to judge)."""
    result = join_runs(results)
    config = result["config"]
    spec = BandSpec.from_config(config["spec"])
    cells = config["cells"]
    if (cells["train"], cells["held_out"]) != (len(pool.train), len(pool.held_out)):
        raise UsageError(
            f"these cells split into {len(pool.train)} to train on and {len(pool.held_out)} held out; the run "
            f"had {cells['train']} and {cells['held_out']}: give the --cells the run was given ({cells['sources']})"
        )
    runs = band_runs(result["records"])
    errors = {r["precision"]: r for r in result["records"] if r["record"] == "band_verdict" and r["status"] == "error"}
    verdicts = [errors.get(v["precision"], v) for v in band_verdicts(spec, runs, pool)]
    kept = [r for r in result["records"] if r["record"] != "band_verdict"]  # make_result restamps gating
    env = environment()
    rejudged = {"commit": env.get("git_commit"), "dirty": env.get("git_dirty"), "at": now_utc()}
    rejudged["from"] = [
        {"file": r.get("_source", {}).get("file"), "sha256": r.get("_source", {}).get("sha256")} for r in results
    ]
    new_config = {**config, "cells": {**cells, **baselines(pool, get_variant(spec.variant))}, "rejudged": rejudged}
    out = make_result("parity", kept + verdicts, band_weights(spec), new_config, env=result["env"])
    out["created"] = result["created"]
    return out


def band_weights(spec: BandSpec) -> dict:
    """The ``weights`` block: seeded random weights, one draw per seed of the band."""
    block = {k: v for k, v in random_weights_block(spec.first_seed).items() if k != "seed"}
    return {**block, "seeds": list(range(spec.first_seed, spec.first_seed + spec.seeds))}


def band_config(spec: BandSpec, pool: CellPool, sources: list[str]) -> dict:
    """The ``config`` block: the spec, the cells (sources, counts) and the optimizer."""
    from harness.training import MASK_FRACTION, WARMUP_FRACTION, WEIGHT_DECAY

    return {
        "spec": asdict(spec),
        "cells": {
            "sources": sources,
            "train": len(pool.train),
            "held_out": len(pool.held_out),
            "classes": pool.classes,
            **baselines(pool, get_variant(spec.variant)),
            "split_seed": SPLIT_SEED,
        },
        "optimizer": {"name": "AdamW", "lr": spec.lr, "warmup_fraction": WARMUP_FRACTION, "weight_decay": WEIGHT_DECAY},
        "mask_fraction": MASK_FRACTION,
    }
