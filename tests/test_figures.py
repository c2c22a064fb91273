"""Figures that cannot lie: every drawn series carries the style its label says, the same in every
panel and figure, and one legend covers all panels; every renderer takes every verdict status."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from harness.results import make_result, read_results
from reports.document import series_style
from reports.parity import render_parity_report
from reports.perf_figures import draw_fp8_speedup, draw_metric_vs_batch
from reports.perf_points import fp8_over_bf16, perf_points, same_run_ratios

REPO = Path(__file__).resolve().parents[1]


GPUS = {"H100": "NVIDIA H100 80GB HBM3", "H200": "NVIDIA H200"}


def _point(variant, backend, precision, batch, cells_per_s, **extra) -> dict:
    return {
        "record": "point",
        "status": "reported",
        "variant": variant,
        "backend": backend,
        "precision": precision,
        "layout": "full",
        "batch": batch,
        "seq_len": 2048,
        "cells_per_s": cells_per_s,
        "spread": 0.01,
        **extra,
    }


def _results():
    """One run per GPU × five (backend, precision) series, present in some panels and not others."""
    series = [("hf-sdpa", "bf16"), ("te", "bf16"), ("te", "fp8-delayed"), ("te-fused", "fp8-delayed"), ("te", "fp32")]
    results = []
    for gpu, name in GPUS.items():
        records = [
            _point(variant, backend, precision, batch, 100.0 * (i + 1) * batch * (1.1 if gpu == "H200" else 1.0))
            for variant in ("V1-10M", "V2-104M")
            for i, (backend, precision) in enumerate(series)
            for batch in (8, 16)
            if not (variant == "V1-10M" and backend == "te-fused")
        ]  # a series only the second panel has
        results.append(make_result("perf", records, {"source": "random-init"}, {}, env={"gpu_name": name}))
    return results


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
    results = _results()
    for fig in (draw_metric_vs_batch(perf_points(results), "cells_per_s", "cells/s"), draw_fp8_speedup(results)):
        assert _check_lines(fig) > 0
        labels = {text.get_text() for legend in fig.legends for text in legend.get_texts()}
        drawn = {line.get_label() for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}
        assert labels == drawn  # one legend, covering every panel's series
        plt.close(fig)


def test_a_speedup_divides_two_points_of_one_run_only():
    """A newer run that measured bf16 alone replaces the bf16 number in the tables, but never becomes
    the denominator of an older run's FP8 point."""
    env = {"gpu_name": GPUS["H100"]}
    old = make_result(
        "perf",
        [_point("V1-10M", "te", "bf16", 8, 100.0), _point("V1-10M", "te", "fp8-delayed", 8, 120.0)],
        {},
        {},
        env=env,
    )
    new = make_result("perf", [_point("V1-10M", "te", "bf16", 8, 150.0)], {}, {}, env=env)
    assert perf_points([old, new])[("V1-10M", "te", "bf16", "full", 8, 2048)]["H100"]["cells_per_s"] == 150.0
    ratios = same_run_ratios([old, new], fp8_over_bf16)
    assert ratios[("V1-10M", "te", "fp8-delayed", "full", 8, 2048)] == {"H100": pytest.approx(1.2)}  # not 0.8


def test_energy_is_drawn_only_where_telemetry_covered_a_second():
    records = [
        _point("V1-10M", "te", "bf16", 8, 100.0, energy_per_cell_j=1.0, telemetry_seconds=2.0),
        _point("V1-10M", "te", "bf16", 16, 100.0, energy_per_cell_j=9.0, telemetry_seconds=0.05),
    ]
    fig = draw_metric_vs_batch(
        perf_points([make_result("perf", records, {}, {}, env={"gpu_name": GPUS["H100"]})]), "energy_per_cell_j", "J"
    )
    (line,) = [line for ax in fig.axes for line in ax.get_lines()]
    assert list(line.get_xdata()) == [8] and list(line.get_ydata()) == [1.0]
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
