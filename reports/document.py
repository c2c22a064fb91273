"""The document every rendered report is made of: sections of tables and figures, value
formatting, the GPU column a results file belongs to, one fixed style per plotted series, and the
two renderings of a list of sections (markdown with PNG files beside it; one self-contained HTML
page), so that no two reports render the same thing differently."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt

from harness.backend_names import BACKENDS
from harness.precision import PRECISIONS
from harness.verdict.gpus import gpu_class, result_gpu  # noqa: F401  (the GPU column: one rule)

GPU_COLUMNS = ("A100", "H100", "H200", "GB200")  # the perf tables' columns, measured or not
NOT_MEASURED = "not measured"


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


TAB10 = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)  # matplotlib's default cycle, by name
BACKEND_COLORS = dict(zip(BACKENDS, TAB10))
PRECISION_MARKERS = dict(zip(PRECISIONS, "os^vDP*Xhd"))
GPU_LINES = {"H100": "-", "H200": "--", "A100": ":", "GB200": "-."}


def series_style(backend: str, precision: str, gpu: str | None = None) -> dict:
    """One fixed look per series, the same in every panel and every figure: colour by backend,
    marker by precision, line by GPU (so no two series share a style, whatever the panel holds)."""
    return {
        "color": BACKEND_COLORS.get(backend, "black"),
        "marker": PRECISION_MARKERS.get(precision, "o"),
        "linestyle": GPU_LINES.get(gpu, "-.") if gpu else "-",
    }


def figure_legend(fig, axes) -> None:
    """One legend for all panels, beneath them: every series once, whichever panel drew it."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        labels = sorted(entries)
        fig.legend(
            [entries[k] for k in labels],
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(4, len(labels)),
            fontsize=6,
        )


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
                yield result_gpu(r), r, rec


TITLE = "Geneformer on TransformerEngine: hardware qualification report"


def to_markdown(sections: list[Section], image_dir: Path, title: str = TITLE) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""] + [t + "\n" for t in s.text]
        for t in s.tables:
            lines.append("| " + " | ".join(t.headers) + " |")
            lines.append("|" + "---|" * len(t.headers))
            lines += ["| " + " | ".join(_fmt(c).replace("|", "/") for c in row) + " |" for row in t.rows]
            lines.append("")
        for f in s.figures:
            (image_dir / f.name).write_bytes(f.png)
            lines += [f"![{f.caption}]({f.name})", ""]
    return "\n".join(lines) + "\n"


CSS = (  # one string, as it was before the linter's line length: the rendered page is unchanged
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}\n"
    "table{border-collapse:collapse;margin:0.8em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;"
    "text-align:left}\n"
    "th{background:#f0f0f0}td.pass{background:#e6f4e6}td.fail{background:#f8d7d7}td.na{color:#888;background:#fafafa}\n"
    "p.overall{font-size:20px;font-weight:bold;padding:6px 10px;display:inline-block}p.pass{background:#cdeccd}\n"
    "p.fail{background:#f4b6b6}p.na{background:#fdf0c4}p.incomplete,td.incomplete{background:#fdf0c4}\n"
    "figure{display:inline-block;margin:0.5em;vertical-align:top}img.half{width:600px}"
    "img.wide{width:100%;max-width:1350px}figcaption{font-size:12px;color:#555}"
)


def _cell_class(text: str) -> str:
    t = text.upper()
    if t.startswith(("FAIL", "ERROR")):
        return "fail"
    if t.startswith(("INCOMPLETE", "NOT RUN", "NOT_RUN", "INCONCLUSIVE")):
        return "incomplete"
    if t.startswith(("PASS", "WAIVED")):
        return "pass"
    if t.startswith(("NOT MEASURED", "SKIPPED", "NOT EVALUATED", "OUT OF SCOPE", "OUT_OF_SCOPE")):
        return "na"
    return ""


def to_html(sections: list[Section]) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Geneformer TE qualification</title>"
        f"<style>{CSS}</style></head><body><h1>{TITLE}</h1>"
    ]
    for s in sections:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        for t in s.text:
            overall = t.startswith("**Overall:")
            t = html.escape(t).replace("**", "")
            out.append(
                f"<p class='overall {_cell_class(t.removeprefix('Overall: ')) or 'na'}'>{t}</p>"
                if overall
                else f"<p>{t}</p>"
            )
        for table in s.tables:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
            for row in table.rows:
                cells = [_fmt(c) for c in row]
                out.append(
                    "<tr>" + "".join(f"<td class='{_cell_class(c)}'>{html.escape(c)}</td>" for c in cells) + "</tr>"
                )
            out.append("</table>")
        for f in s.figures:
            data = base64.b64encode(f.png).decode()
            out.append(
                f"<figure><img class='{'wide' if f.wide else 'half'}' alt='{html.escape(f.caption)}' "
                f"src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)
