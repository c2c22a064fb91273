"""The downstream gate: each judged HF-vs-TE agreement (``gfqual eval``), read from its record
(status and the gating rule), never from a rendered table. A task is named with the data it ran
on: two synthetic versions of one task (40 and 200 planted marker genes) are two cases."""

from __future__ import annotations

import re

from harness.verdict.checks import Check, check, counted_status, records


def task_data(config: dict) -> str:
    """What the task ran on; for synthetic cell tasks, how strong the planted signal was (the task
    was made harder once: 200 marker genes per class let every run score 1.0)."""
    if not config.get("synthetic"):
        return config.get("data", "")
    markers = re.search(r"(\d+) marker genes", config.get("data", ""))
    return f"synthetic, {markers.group(1)} marker genes per class" if markers else "synthetic"


def downstream_checks(results: list[dict]) -> list[Check]:
    out = []
    for res, r in records(results, "downstream", "agreement"):
        if status := counted_status(r):
            data = task_data(res["config"])
            task = f"{r['task']} ({data})" if data else r["task"]
            case = f"{task} {r['variant']} {r['backend']}@{r['precision']} vs {r.get('reference')}"
            detail = r.get("reason") or (
                f"worst metric difference {r['worst_abs_diff']:.3g} against a bound of {r['bound']}"
                if "bound" in r and r.get("worst_abs_diff") is not None
                else ""
            )
            out.append(check(res, r, "downstream", case, detail, status))
    return out
