"""The pieces every rendered report is made of: sections of tables and figures, value formatting,
and the GPU column a results file belongs to. Markdown and HTML renderers read these."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _records(results, kind, record):
    for r in results:
        if r["kind"] != kind:
            continue
        for rec in r["records"]:
            if rec.get("record") == record:
                yield gpu_class(r["env"].get("gpu_name")), r, rec
