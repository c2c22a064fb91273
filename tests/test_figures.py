"""Figures that cannot lie: every drawn series carries the style its label says, the same in every
panel and figure, and one legend covers all panels; every renderer takes every verdict status."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from harness.results import read_results
from reports.document import series_style
from reports.parity import render_parity_report
from reports.perf import draw_fp8_speedup, draw_metric_vs_batch

REPO = Path(__file__).resolve().parents[1]


def _points():
    """Two GPUs × five (backend, precision) series, present in some panels and not others."""
    points = {}
    series = [("hf-sdpa", "bf16"), ("te", "bf16"), ("te", "fp8-delayed"), ("te-fused", "fp8-delayed"), ("te", "fp32")]
    for variant in ("V1-10M", "V2-104M"):
        for i, (backend, precision) in enumerate(series):
            if variant == "V1-10M" and backend == "te-fused":
                continue  # a series only the second panel has: panel-by-panel colours would drift here
            for batch in (8, 16):
                points[(variant, backend, precision, "full", batch, 2048)] = {
                    gpu: {"cells_per_s": 100.0 * (i + 1) * batch * (1.1 if gpu == "H200" else 1.0)}
                    for gpu in ("H100", "H200")}
    return points


def _check_lines(fig):
    """Each line's colour, marker and line style are the ones its label's series owns."""
    checked = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue  # reference lines (the 1.0 of a speed-up) have no series
            gpu, backend, precision = label.split()
            want = series_style(backend, precision, gpu)
            assert line.get_color() == want["color"] and line.get_marker() == want["marker"], label
            assert line.get_linestyle() == want["linestyle"], label
            checked += 1
    return checked


def test_every_line_has_its_series_style_in_every_panel():
    points = _points()
    for fig in (draw_metric_vs_batch(points, "cells_per_s", "cells/s"), draw_fp8_speedup(points)):
        assert _check_lines(fig) > 0
        labels = {text.get_text() for legend in fig.legends for text in legend.get_texts()}
        drawn = {line.get_label() for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}
        assert labels == drawn  # one legend, covering every panel's series
        plt.close(fig)


def test_series_styles_are_all_different():
    from harness.backend_names import BACKENDS
    from harness.precision import PRECISIONS

    styles = {tuple(series_style(b, p, g).values()) for b in BACKENDS for p in PRECISIONS for g in ("H100", "H200")}
    assert len(styles) == len(BACKENDS) * len(PRECISIONS) * 2


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_report_parity_renders_every_committed_verdict(tmp_path, gpu):
    """The README's command on the committed results, error verdicts included."""
    results = read_results(REPO / "results" / gpu, kind="parity")
    path = render_parity_report(results, tmp_path)
    text = path.read_text()
    statuses = {r["status"] for res in results for r in res["records"] if r.get("record") == "verdict"}
    for status in statuses:
        assert (f"| {status} |" if status == "skipped" else f"**{status}**") in text
