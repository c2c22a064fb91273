"""One command from a machine to a verdict: qualification plans as data (plans/*.json, plan.py),
the resumable runner that carries a plan out step by step (runner.py), and the side-by-side
comparison of two qualifications (compare.py)."""
