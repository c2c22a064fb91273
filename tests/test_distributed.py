"""Data parallelism on the CPU: 2 processes under torchrun with the gloo backend (issue 8).

The sharding and gathering code is the same that runs on NCCL across GPUs; here it must give
back every cell once, in input order, with the vectors one process computes, and a failing rank
must be reported by every rank instead of leaving the others waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.distributed import RankFailure, reassemble, shard
from harness.tolerances import CONVERSION_MAX_ABS


def _torchrun(nproc: int, *args: str, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


def test_shards_cover_every_cell_once_with_balanced_tokens():
    lengths = [int(x) for x in np.random.default_rng(0).integers(10, 2000, 101)]
    shards = [shard(lengths, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(101))
    tokens = [sum(lengths[i] for i in s) for s in shards]
    assert max(tokens) - min(tokens) <= max(lengths)  # dealt longest-first: within one cell of each other


def test_reassembly_refuses_lost_or_duplicated_cells():
    stack = lambda parts, idx: idx  # noqa: E731
    assert reassemble([([2, 0], None), ([1], None)], 3, stack) == [2, 0, 1]
    with pytest.raises(RankFailure, match="1 missing"):
        reassemble([([0], None), ([2], None)], 3, stack)
    with pytest.raises(RankFailure, match="1 duplicated"):
        reassemble([([0, 1], None), ([1, 2], None)], 3, stack)


@pytest.fixture(scope="module")
def tokenized(make_tokenized):
    return make_tokenized(37, seed=5, max_len=128, obs_columns=("cell_state",)) / "tok"


def test_torchrun_embedding_equals_one_process_in_input_order(tokenized, tmp_path):
    common = [
        "-m",
        "harness",
        "embed",
        "--input",
        str(tokenized),
        "--variant",
        "V1-10M",
        "--backend",
        "hf-eager",
        "--precision",
        "fp32",
        "--max-tokens",
        "1024",
    ]
    one = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one.parquet"), "--json", str(tmp_path / "one.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr
    two = _torchrun(
        2, *common, "--out", str(tmp_path / "two.parquet"), "--json", str(tmp_path / "two.json"), cwd=tmp_path
    )
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    assert len(a) == len(b) == 37
    assert a["cell_index"].tolist() == b["cell_index"].tolist() == sorted(a["cell_index"])
    assert (a["cell_state"] == b["cell_state"]).all()
    emb = [c for c in a.columns if c.startswith("emb_")]
    assert np.abs(a[emb].to_numpy() - b[emb].to_numpy()).max() <= CONVERSION_MAX_ABS
    record = json.loads((tmp_path / "two.json").read_text())["records"][0]
    assert record["world_size"] == 2 and record["cells"] == 37
    assert "on 2 rank(s)" in two.stdout


def test_one_process_under_torchrun_takes_the_same_gather_path(tokenized, tmp_path):
    done = _torchrun(
        1,
        "-m",
        "harness",
        "embed",
        "--input",
        str(tokenized),
        "--variant",
        "V1-10M",
        "--out",
        str(tmp_path / "solo.parquet"),
        "--json",
        str(tmp_path / "solo.json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on 1 rank(s)" in done.stdout and len(pd.read_parquet(tmp_path / "solo.parquet")) == 37
    assert json.loads((tmp_path / "solo.json").read_text())["records"][0]["launcher"] == "torchrun"


def test_a_failing_rank_is_reported_by_every_rank(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        textwrap.dedent("""
        from harness.distributed import RankFailure, context, run_on_every_rank

        def work():
            if context().rank == 1:
                raise ValueError("boom on purpose")
            return context().rank

        try:
            run_on_every_rank(work)
            print(f"rank {context().rank}: no failure seen")
        except RankFailure as exc:
            print(f"rank {context().rank} saw: {exc}")
    """)
    )
    repo = Path(__file__).resolve().parents[1]
    done = _torchrun(2, str(script), cwd=repo)
    assert done.returncode == 0, done.stderr[-2000:]
    for rank in (0, 1):
        assert f"rank {rank} saw: rank 1 of 2 failed: ValueError: boom on purpose" in done.stdout


def test_a_sweep_under_torchrun_records_one_row_for_all_ranks(tmp_path):
    spec = {
        "name": "dp",
        "variants": ["V1-10M"],
        "backends": ["hf-eager", "te"],
        "precisions": ["fp32"],
        "layouts": ["full"],
        "batches": [2],
        "seq_lens": [32],
        "warmup": 1,
        "repeats": 3,
    }
    (tmp_path / "dp.json").write_text(json.dumps(spec))
    done = _torchrun(
        2,
        "-m",
        "harness",
        "bench",
        "--sweep",
        str(tmp_path / "dp.json"),
        "--out",
        str(tmp_path / "dp-out.json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "dp-out.json").read_text())
    assert result["config"]["world_size"] == 2
    hf, te = result["records"]
    assert hf["status"] == "reported" and hf["world_size"] == 2 and hf["cells"] == 2 * 2
    assert hf["slowest_rank_cells_per_s"] <= hf["fastest_rank_cells_per_s"]
    assert hf["cells_per_s"] >= 2 * hf["slowest_rank_cells_per_s"]
    assert te["status"] == "skipped" and "CUDA GPU" in te["reason"]
    assert not (tmp_path / "dp-out.json.partial.jsonl").exists()


def test_combined_rows_add_throughput_and_name_a_failed_rank():
    from harness.perf.sweep import combine_ranks

    base = {
        "record": "point",
        "status": "reported",
        "cells": 8,
        "cells_per_s": 100.0,
        "tokens_per_s": 1e5,
        "padded_tokens_per_s": 1e5,
        "tflops": 50.0,
        "shape_tflops": 50.0,
        "ceiling_tflops": 100.0,
        "median_ms": 80.0,
        "min_ms": 79.0,
        "max_ms": 81.0,
        "spread": 0.025,
        "peak_mem_bytes": 2**30,
        "energy_per_cell_j": 2.0,
        "repeats": 10,
        "remeasured": False,
        "noisy": False,
    }
    row = combine_ranks(
        [
            base,
            {
                **base,
                "cells_per_s": 90.0,
                "median_ms": 89.0,
                "max_ms": 90.0,
                "spread": 0.03,
                "repeats": 30,
                "remeasured": True,
            },
        ]
    )
    assert row["cells_per_s"] == 190.0 and row["median_ms"] == 89.0 and row["spread"] == 0.03
    assert (row["repeats"], row["remeasured"], row["noisy"]) == (10, True, False)  # any rank's re-measure shows
    assert row["ceiling_fraction"] == 100.0 / 200.0 and row["world_size"] == 2
    failed = combine_ranks([base, {**base, "status": "skipped", "reason": "CUDA out of memory"}])
    assert failed["status"] == "skipped" and failed["reason"] == "rank 1 of 2: CUDA out of memory"


def test_eval_under_torchrun_gives_the_one_process_predictions(tmp_path):
    args = [
        "-m",
        "harness",
        "eval",
        "cardiomyopathy",
        "--variant",
        "V1-10M",
        "--runs",
        "te-format-torch@fp32",
        "--max-len",
        "64",
        "--max-cells",
        "60",
    ]
    one = subprocess.run(
        [sys.executable, *args, "--out", str(tmp_path / "one.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun(2, *args, "--out", str(tmp_path / "two.json"), cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]

    def predictions(name):
        records = json.loads((tmp_path / name).read_text())["records"]
        return {(r["backend"], r["item"]): r for r in records if r["record"] == "prediction"}

    a, b = predictions("one.json"), predictions("two.json")
    assert a.keys() == b.keys() and len(a) == 2 * 60  # the reference and the candidate, every cell once
    for key, row in a.items():
        assert row["predicted"] == b[key]["predicted"]
        assert abs(row["p_dilated"] - b[key]["p_dilated"]) <= CONVERSION_MAX_ABS  # same model, other batches
