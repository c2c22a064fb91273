"""Waivers as data: known failures signed off by a named owner, with a reason and an expiry date.

    {"waivers": [{"gpu": "H100", "gate": "downstream",
                  "case": "<a failure's case key, as verdict.json names it>",
                  "reason": "why this failure is accepted", "owner": "who signed it off",
                  "expires": "2027-03-31"}]}

``gpu`` may be null (every GPU). A waived failure is still listed (``waived: true``, with its
waiver) and counted apart; it no longer fails its GPU. A waiver past its expiry date waives
nothing: the failure stays, and a failure of class ``waiver-expired`` is added. A malformed file is
bad input (exit 2) naming the entry and the field.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from models.errors import UsageError

FIELDS = ("gate", "case", "reason", "owner", "expires")


def load_waivers(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"waivers file {path}: cannot read it: {exc}") from exc
    entries = data.get("waivers") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise UsageError(f'waivers file {path}: expected {{"waivers": [...]}}, a list of waivers')
    for i, w in enumerate(entries):
        where = f"waivers file {path}, waiver {i}"
        if not isinstance(w, dict):
            raise UsageError(f"{where}: not an object")
        missing = [k for k in FIELDS if not isinstance(w.get(k), str) or not w[k].strip()]
        if missing:
            raise UsageError(f"{where}: lacks {', '.join(missing)} (each a non-empty string; fields: {FIELDS})")
        try:
            dt.date.fromisoformat(w["expires"])
        except ValueError as exc:
            raise UsageError(f"{where}: expires {w['expires']!r} is not a date (YYYY-MM-DD)") from exc
        if w.get("gpu") is not None and not isinstance(w["gpu"], str):
            raise UsageError(f"{where}: gpu must be a GPU name such as H100, or null for every GPU")
    return entries


def waiver_for(failure: dict, waivers: list[dict]) -> dict | None:
    """The waiver that names this failure (its gate and case, and its GPU unless the waiver is for every GPU)."""
    for w in waivers:
        if w["gate"] == failure["gate"] and w["case"] == failure["case"] and w.get("gpu") in (None, failure["gpu"]):
            return w
    return None


def expired(waiver: dict, today: dt.date) -> bool:
    return dt.date.fromisoformat(waiver["expires"]) < today
