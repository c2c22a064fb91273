"""The pieces every rendered report is made of: sections of tables and figures, value formatting,
and the GPU column a results file belongs to. Markdown and HTML renderers read these."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.backend_names import BACKENDS  # noqa: E402
from harness.precision import PRECISIONS  # noqa: E402

GPU_COLUMNS = ("A100", "H100", "H200", "GB200")
NOT_MEASURED = "not measured"


def gpu_class(name: str | None) -> str:
    """'NVIDIA H100 80GB HBM3' → 'H100'; a CPU run → 'CPU'."""
    if not name:
        return "CPU"
    for short in sorted(GPU_COLUMNS, key=len, reverse=True):
        if short in name:
            return short
    return name


@dataclass
class Table:
    headers: list[str]
    rows: list[list]


@dataclass
class Figure:
    name: str
    png: bytes
    caption: str
    wide: bool = False  # spans the page (multi-panel), else two to a row


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return "—" if v is None else str(v)


BACKEND_COLORS = dict(zip(BACKENDS, plt.cm.tab10.colors))
PRECISION_MARKERS = dict(zip(PRECISIONS, "os^vDP*Xhd"))
GPU_LINES = {"H100": "-", "H200": "--", "A100": ":", "GB200": "-."}


def series_style(backend: str, precision: str, gpu: str | None = None) -> dict:
    """One fixed look per series, the same in every panel and every figure: colour by backend,
    marker by precision, line by GPU (so no two series share a style, whatever the panel holds)."""
    return {"color": BACKEND_COLORS.get(backend, "black"), "marker": PRECISION_MARKERS.get(precision, "o"),
            "linestyle": GPU_LINES.get(gpu, "-.") if gpu else "-"}


def figure_legend(fig, axes) -> None:
    """One legend for all panels, beneath them: every series once, whichever panel drew it."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        labels = sorted(entries)
        fig.legend([entries[k] for k in labels], labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(4, len(labels)), fontsize=6)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # the figure legend sits below the axes
    plt.close(fig)
    return buf.getvalue()


def _records(results, kind, record):
    for r in results:
        if r["kind"] != kind:
            continue
        for rec in r["records"]:
            if rec.get("record") == record:
                yield gpu_class(r["env"].get("gpu_name")), r, rec
