"""The environment stamped on every result (harness/environment.py)."""

from __future__ import annotations


def test_git_state_says_whether_the_tree_was_dirty(monkeypatch):
    from harness.environment import git_state

    monkeypatch.delenv("GFQUAL_COMMIT", raising=False)
    local = git_state()
    assert isinstance(local["git_dirty"], bool) and len(local["git_commit"]) == 40  # this checkout knows
    monkeypatch.setenv("GFQUAL_COMMIT", "abc123")
    assert git_state() == {"git_commit": "abc123", "git_dirty": None}  # a copied tree: unknown, not "clean"
    monkeypatch.setenv("GFQUAL_GIT_DIRTY", "1")
    assert git_state() == {"git_commit": "abc123", "git_dirty": True}
