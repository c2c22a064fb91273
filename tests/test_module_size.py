"""The house's file-size rule (issue 31): no module of the suite's code (harness/, models/,
reports/) over 500 lines. A module that outgrows it is split along a seam, never cut anywhere."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def too_long(root: Path = REPO, limit: int = MAX_LINES) -> dict[str, int]:
    """Every .py file under harness/, models/ and reports/ over ``limit`` lines, with its length."""
    lengths = {
        p.relative_to(root).as_posix(): len(p.read_text().splitlines())
        for top in ("harness", "models", "reports")
        for p in (root / top).rglob("*.py")
    }
    return {path: n for path, n in sorted(lengths.items()) if n > limit}


def test_no_module_is_over_500_lines():
    assert not too_long(), f"split these along a seam (over {MAX_LINES} lines): {too_long()}"


def test_the_rule_sees_a_long_module_deep_in_a_package(tmp_path):
    deep = tmp_path / "harness" / "perf" / "long.py"
    deep.parent.mkdir(parents=True)
    deep.write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "short.py").write_text("x = 1\n" * MAX_LINES)
    assert too_long(tmp_path) == {"harness/perf/long.py": MAX_LINES + 1}
