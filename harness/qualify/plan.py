"""A qualification plan: what a qualification covers and the steps that measure it, as data.

A plan (JSON; shipped ones in plans/, or a user's file) names its scope — the GPU classes it
qualifies ("local": the GPU it runs on, resolved before it is recorded), variants, precisions and
gates — and its steps. Each step is one existing gfqual subcommand with its arguments, the gate
it feeds, an estimate in seconds and the results files it writes. Arguments may name two places
of the qualification folder: ``{results}`` (results files, read by the report) and ``{data}``
(inputs a step makes for later ones, e.g. synthetic cells). A malformed plan is refused before
anything runs (exit 2, naming the problem and the step)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.precision import PRECISIONS
from models.errors import UsageError
from models.registry import VARIANTS

PLAN_DIR = Path(__file__).parent / "plans"
GATES = ("parity", "embeddings", "training", "reliability", "perf", "downstream")
DEVICES = ("cpu", "cuda")  # what a plan needs: a cuda plan on a CPU is refused unless --force
PLACES = ("results", "data")  # the {placeholders} a step's arguments may name
# Subcommands a plan cannot run as a step: they read or render a qualification, they make none.
NOT_STEPS = ("qualify", "compare", "report", "regenerate-reports", "report-parity", "report-perf", "report-downstream")
PLAN_KEYS = {"name", "description", "device", "gpus", "variants", "precisions", "gates", "steps"}
STEP_KEYS = {"name", "gate", "args", "estimate_s", "outputs"}
OPTIONAL_STEP_KEYS = {"data", "timeout_s", "retries", "why"}
STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def shipped_plans() -> list[str]:
    return sorted(p.stem for p in PLAN_DIR.glob("*.json"))


def load_plan(spec: str) -> dict:
    """A plan by shipped name (``standard``) or JSON path, validated; its ``source`` says which."""
    path = Path(spec)
    if not path.is_file():
        if path.suffix == ".json" or "/" in spec:
            raise UsageError(f"--plan {spec}: no such file (shipped plans: {', '.join(shipped_plans())})")
        path = PLAN_DIR / f"{spec}.json"
        if not path.is_file():
            raise UsageError(
                f"--plan {spec}: no such plan; shipped plans: {', '.join(shipped_plans())}, or a JSON file"
            )
    try:
        plan = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--plan {path}: cannot read the plan: {exc}") from exc
    validate_plan(plan, str(path))
    return {**plan, "source": spec if path.parent == PLAN_DIR and path.stem == spec else str(path)}


def validate_plan(plan, where: str = "plan") -> None:
    """Raise UsageError naming the first problem: missing or unknown keys, an unknown gate, variant,
    precision or subcommand, arguments the subcommand refuses, an output the step does not write."""
    if not isinstance(plan, dict):
        raise UsageError(f"{where}: a plan is a JSON object")
    _keys(plan, PLAN_KEYS, {"source"}, where)
    if plan["device"] not in DEVICES:
        raise UsageError(f"{where}: device {plan['device']!r} is not one of {', '.join(DEVICES)}")
    for key, known in (("gates", GATES), ("variants", VARIANTS), ("precisions", PRECISIONS)):
        if not isinstance(plan[key], list) or not plan[key]:
            raise UsageError(f"{where}: {key} must be a non-empty list")
        unknown = [x for x in plan[key] if x not in known]
        if unknown:
            raise UsageError(f"{where}: unknown {key} {unknown} (known: {', '.join(known)})")
    if not isinstance(plan["gpus"], list) or not plan["gpus"] or not all(isinstance(g, str) for g in plan["gpus"]):
        raise UsageError(f'{where}: gpus must be a non-empty list of GPU classes ("H100", ... or "local")')
    if not isinstance(plan["steps"], list) or not plan["steps"]:
        raise UsageError(f"{where}: steps must be a non-empty list")
    names: set[str] = set()
    outputs: set[str] = set()
    for i, step in enumerate(plan["steps"]):
        _validate_step(
            step, plan, f"{where}: step {i + 1} ({step.get('name', '?') if isinstance(step, dict) else '?'})"
        )
        if step["name"] in names:
            raise UsageError(f"{where}: two steps are named {step['name']!r}; step names must be unique")
        names.add(step["name"])
        taken = outputs & set(step["outputs"])
        if taken:
            raise UsageError(f"{where}: step {step['name']} writes {sorted(taken)}, which an earlier step writes")
        outputs |= set(step["outputs"])


def _keys(obj: dict, required: set, optional: set, where: str) -> None:
    missing = sorted(required - set(obj))
    if missing:
        raise UsageError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        raise UsageError(f"{where}: unknown keys {unknown} (a step takes {', '.join(sorted(required | optional))})")


def _validate_step(step, plan: dict, where: str) -> None:
    if not isinstance(step, dict):
        raise UsageError(f"{where}: a step is a JSON object")
    _keys(step, STEP_KEYS, OPTIONAL_STEP_KEYS, where)
    if not isinstance(step["name"], str) or not STEP_NAME.match(step["name"]):
        raise UsageError(f"{where}: name {step['name']!r} must be letters, digits, '.', '_' or '-'")
    if step["gate"] not in plan["gates"]:
        raise UsageError(f"{where}: gate {step['gate']!r} is not one of the plan's gates ({', '.join(plan['gates'])})")
    for key in ("estimate_s", "timeout_s"):
        value = step.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UsageError(f"{where}: {key} must be a number of seconds above 0")
    if not isinstance(step.get("retries", 0), int) or step.get("retries", 0) < 0:
        raise UsageError(f"{where}: retries must be a whole number ≥ 0")
    args = step["args"]
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise UsageError(f"{where}: args must be a non-empty list of strings, the subcommand first")
    for arg in args:
        for place in re.findall(r"\{(\w+)\}", arg):
            if place not in PLACES:
                raise UsageError(f"{where}: unknown placeholder {{{place}}} in {arg!r} (known: {{results}}, {{data}})")
    for key in ("outputs", "data"):
        paths = step.get(key, [])
        if not isinstance(paths, list) or not all(isinstance(p, str) and _relative(p) for p in paths):
            raise UsageError(f"{where}: {key} must be a list of relative paths inside the qualification folder")
    if not step["outputs"] and not step.get("data"):
        raise UsageError(f"{where}: a step must write something: list its results files in outputs (or data)")
    for out in step["outputs"]:
        if not out.endswith(".json") or f"{{results}}/{out}" not in args:
            raise UsageError(
                f"{where}: output {out!r} must be a .json results file its args write as {{results}}/{out}"
            )
    for path in step.get("data", []):
        if not path.startswith("data/") or not any(a == "{" + path.replace("/", "}/", 1) for a in args):
            raise UsageError(f"{where}: data {path!r} must be a path under data/ its args name as {{data}}/...")
    _check_command(args, where)


def _relative(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts


def _check_command(args: list[str], where: str) -> None:
    """The subcommand exists and takes these arguments (parsed as gfqual would, with no effect)."""
    import contextlib
    import io

    from harness.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    if args[0] not in commands or args[0] in NOT_STEPS:
        runnable = ", ".join(c for c in commands if c not in NOT_STEPS)
        raise UsageError(f"{where}: unknown subcommand {args[0]!r} (a step runs one of: {runnable})")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser.parse_args(args)
    except SystemExit:
        message = errors.getvalue().strip().splitlines()[-1] if errors.getvalue().strip() else "bad arguments"
        raise UsageError(f"{where}: gfqual {' '.join(args)}: {message}") from None


def resolve_plan(plan: dict, local_gpu: str) -> dict:
    """The plan as recorded: "local" replaced by the GPU class this machine has."""
    gpus = list(dict.fromkeys(local_gpu if g == "local" else g for g in plan["gpus"]))
    return {**plan, "gpus": gpus}


def step_command(step: dict) -> list[str]:
    """The step's arguments with its places named as run from the qualification folder."""
    return [arg.replace("{results}", "results").replace("{data}", "data") for arg in step["args"]]


def estimate(plan: dict) -> float:
    return float(sum(s["estimate_s"] for s in plan["steps"]))
