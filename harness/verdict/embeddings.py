"""The embeddings gate: cell embeddings of tokenized cells, candidate against the HF reference."""

from __future__ import annotations

from harness.verdict.checks import Check, check, counted_status, records


def embedding_checks(results: list[dict]) -> list[Check]:
    out = []
    for res, r in records(results, "parity", "embedding"):
        if status := counted_status(r):
            detail = r.get("reason") or f"{r['n_cells']} cells, rel L2 {r.get('rel_l2')}"
            case = f"embedding {r['variant']} {r['backend']} {r['precision']}"
            out.append(check(res, r, "embeddings", case, detail, status))
    return out
