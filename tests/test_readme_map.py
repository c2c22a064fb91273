"""The README stays a newcomer's page: short, and its map of the code names every module there is."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
MAP = README.split("## Map of the code", 1)[1].split("```")[1]


def test_the_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200


def test_the_map_names_every_module_and_package():
    names = [
        p.stem if p.suffix == ".py" else p.name
        for top in ("harness", "models", "reports")
        for p in (REPO / top).iterdir()
        if (p.suffix == ".py" and not p.stem.startswith("__")) or (p.is_dir() and (p / "__init__.py").exists())
    ]
    missing = [n for n in names if n not in MAP]
    assert not missing, f"the README's map does not name: {missing}"
