"""The parity metrics (harness/parity/metrics.py) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from harness.parity.metrics import StageStats


def test_stage_stats_against_hand_computed_values():
    ref = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    cand = torch.tensor([[1.0, 2.5], [3.0, 3.0]])
    s = StageStats()
    s.add(ref[:1], cand[:1])
    s.add(ref[1:], cand[1:])  # two micro-batches add up to the whole
    r = s.result()
    assert r["max_abs"] == 1.0 and r["mean_abs"] == pytest.approx(1.5 / 4)
    assert r["rel_l2"] == pytest.approx(math.sqrt(1.25 / 30))
    assert r["cosine"] == pytest.approx(27.0 / math.sqrt(30 * 25.25))


def test_stage_stats_topk_and_nonfinite():
    ref = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    s = StageStats(topk=True)
    s.add(ref, torch.tensor([[0.0, 3.0, 2.0], [2.0, 1.0, 0.0]]))
    assert s.result()["top1"] == 0.5
    s.add(ref, torch.tensor([[float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert s.result()["nonfinite"] == 1 and math.isnan(s.result()["rel_l2"])
