"""The one home of the verdict: computed once, from results records only, by one rule; report
sections only display it. One module per family of checks (parity, embeddings, training,
reliability, perf, downstream), GPU identity (gpus), the plan's scope and completeness (plan),
failure classes (classify, known_failures.json), waivers, and the per-GPU x gate matrix that
assembles verdict.json (matrix). The document is described in VERDICT.md."""

from harness.verdict.matrix import exit_code, judge
from harness.verdict.plan import GATES

__all__ = ["GATES", "exit_code", "judge"]
