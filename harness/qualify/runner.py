"""Carry out a qualification plan: each step a ``python -m harness`` subprocess, recorded.

A step runs in its own process, so a kernel crash, an abort or a hang in one step is a finding
recorded against that step (status ``error``, with the tail of its log), never the end of the
run. After every step the ``qualification`` results file (QUAL/results/qualification.json: the
resolved plan, one ``plan_step`` record per step run) is rewritten atomically, so an interrupted
or crashed run leaves a valid file naming what finished. Run again with the same plan and folder,
it resumes: a step whose last record finished (reported or skipped) is not run again when its
identity is unchanged — the sha256 of its command, the code (commit, and the diff of a dirty
tree) and the environment fingerprint (GPU, driver, CUDA, torch, cuDNN, TE, transformers,
Python, TF32 setting); anything else is run again, its old outputs removed first. Ctrl-C stops
the step in progress, records nothing for it, and says how to resume (exit 130).

Layout of a qualification folder: ``results/`` (every step's results files and
qualification.json: what the report reads), ``data/`` (inputs steps make for later steps),
``logs/<step>.log`` (each step's output), and the report and verdict.json beside them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.qualify.plan import estimate, step_command
from harness.results import REPO_ROOT, make_result, now_utc, read_result, write_result
from models.errors import UsageError

QUALIFICATION_FILE = "qualification.json"
# What identifies the machine and software a step ran on (from harness.environment.environment).
FINGERPRINT_KEYS = (
    "gpu_name",
    "gpu_count",
    "compute_capability",
    "driver",
    "cuda",
    "torch",
    "cudnn",
    "te_cudnn",
    "transformers",
    "te",
    "python",
    "NVIDIA_TF32_OVERRIDE",
)
FINISHED = ("reported", "skipped")  # a step that ended with one of these is not run again unchanged
INTERRUPTED = 130


@dataclass(frozen=True)
class Folder:
    """The places of one qualification folder."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def record(self) -> Path:
        return self.results / QUALIFICATION_FILE


def child_env() -> dict:
    """The environment of a step: this one, with the suite importable from any folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def probe_environment() -> dict:
    """harness.environment.environment() as a step would record it, measured in a subprocess: the
    runner itself never touches the GPU (a CUDA context here would hold memory every step needs)."""
    code = "import json, harness; from harness.environment import environment; print(json.dumps(environment()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=600, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"cannot read this machine's environment: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def code_state(env: dict) -> str:
    """The code that runs: its commit, and for a dirty tree the sha256 of its diff, so an edit
    made between two invocations is a different identity."""
    state = str(env.get("git_commit"))
    if env.get("git_dirty") and not os.environ.get("GFQUAL_COMMIT"):
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=REPO_ROOT, capture_output=True, timeout=30, check=False)
        state += "+dirty:" + hashlib.sha256(diff.stdout).hexdigest()[:16]
    return state


def step_identity(step: dict, code: str, env: dict, inputs: tuple[str, ...] = ()) -> str:
    """What decides whether a finished step can stand: its command, the code, the environment,
    and the identities of the earlier steps whose data it reads (new cells, new tokens)."""
    fingerprint = {k: env.get(k) for k in FINGERPRINT_KEYS}
    blob = json.dumps(
        {"command": step_command(step), "code": code, "env": fingerprint, "inputs": list(inputs)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def identities(plan: dict, code: str, env: dict) -> dict[str, str]:
    """Each step's identity, in plan order: a step reading ``{data}/X`` that an earlier step makes
    takes that step's identity in its own, so remaking the data remakes what was built on it."""
    out: dict[str, str] = {}
    makers: dict[str, str] = {}  # a data path -> the step that makes it
    for step in plan["steps"]:
        reads = [makers[d] for d in makers if any(arg == "{" + d.replace("/", "}/", 1) for arg in step["args"])]
        out[step["name"]] = step_identity(step, code, env, tuple(out[name] for name in reads))
        makers.update({d: step["name"] for d in step.get("data", [])})
    return out


def show_command(step: dict) -> str:
    return "gfqual " + " ".join(step_command(step))


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def describe(plan: dict, done: set[str] | None = None) -> str:
    """The plan as printed before it starts: each step with its gate, estimate and command."""
    done = done or set()
    width = max(len(s["name"]) for s in plan["steps"])
    lines = [
        f"plan {plan['name']} ({plan.get('source', '')}): {plan['description']}",
        f"scope: GPUs {', '.join(plan['gpus'])}; variants {', '.join(plan['variants'])}; "
        f"precisions {', '.join(plan['precisions'])}; gates {', '.join(plan['gates'])}",
    ]
    for i, s in enumerate(plan["steps"], 1):
        mark = "done" if s["name"] in done else f"~{_fmt_s(s['estimate_s'])}"
        lines.append(f"{i:3d}. {s['name']:{width}s} {s['gate']:11s} {mark:>6s}  {show_command(s)}")
    todo = sum(s["estimate_s"] for s in plan["steps"] if s["name"] not in done)
    lines.append(f"estimated {_fmt_s(todo)} (m:ss) to run, of {_fmt_s(estimate(plan))} for the whole plan")
    return "\n".join(lines)


class Runner:
    """One qualification folder and plan: the steps' records, resumed from an earlier run."""

    def __init__(self, plan: dict, out: str | os.PathLike, env: dict, progress=print):
        self.plan, self.folder, self.env, self.progress = plan, Folder(Path(out)), env, progress
        self.code = code_state(env)
        self.identity = identities(plan, self.code, env)
        self.records: dict[str, dict] = {}
        self.sessions: list[dict] = []
        if self.folder.record.exists():
            previous = read_result(self.folder.record)
            if previous["kind"] != "qualification":
                raise UsageError(f"{self.folder.record} is not a qualification results file; choose another --out")
            name = previous["config"]["plan"]["name"]
            if name != plan["name"]:
                raise UsageError(
                    f"--out {out} holds a qualification of plan {name!r}, not {plan['name']!r}: "
                    "choose another --out (its results would mix with this plan's)"
                )
            self.records = {r["step"]: r for r in previous["records"] if r["step"] in self.identity}
            self.sessions = list(previous["config"].get("sessions", []))

    def finished(self, step: dict) -> bool:
        """Finished before, unchanged, and its outputs still there: it stands."""
        prev = self.records.get(step["name"])
        return (
            prev is not None
            and prev["status"] in FINISHED
            and prev.get("identity") == self.identity[step["name"]]
            and all((self.folder.results / o).exists() for o in step["outputs"])
            and all((self.folder.root / d).exists() for d in step.get("data", []))
        )

    def done(self) -> set[str]:
        return {s["name"] for s in self.plan["steps"] if self.finished(s)}

    def write(self, session: dict) -> Path:
        """qualification.json, atomically: the plan, every step's latest record, the sessions."""
        records = [self.records[s["name"]] for s in self.plan["steps"] if s["name"] in self.records]
        config = {
            "plan": self.plan,
            "sessions": [*self.sessions, session],
            "steps_wall_s": round(sum(r["wall_s"] for r in records), 1),
            "estimate_s": estimate(self.plan),
        }
        weights = {"source": "plan steps (each step's results file names its own weights)"}
        return write_result(make_result("qualification", records, weights, config, self.env), self.folder.record)

    def run(self) -> int:
        """Every step not finished, in order; 0 when all ran, INTERRUPTED after Ctrl-C."""
        for place in (self.folder.results, self.folder.data, self.folder.logs):
            place.mkdir(parents=True, exist_ok=True)
        steps = self.plan["steps"]
        session = {"started": now_utc(), "wall_s": 0.0, "steps_run": 0, "interrupted": False}
        start = time.monotonic()
        todo_estimate = sum(s["estimate_s"] for s in steps if not self.finished(s))
        spent_estimate = 0.0
        self.write(session)
        for i, step in enumerate(steps, 1):
            tag = f"[{i}/{len(steps)}] {step['name']}"
            if self.finished(step):
                self.progress(f"{tag}: finished in an earlier run with the same command, code and environment")
                continue
            self.progress(f"{tag} ({step['gate']}): {show_command(step)}  (estimate {_fmt_s(step['estimate_s'])})")
            try:
                record = self.run_step(step)
            except KeyboardInterrupt:
                session.update(wall_s=round(time.monotonic() - start, 1), interrupted=True)
                self.write(session)
                self.progress(
                    f"\ninterrupted during step {step['name']}: nothing recorded for it; the {len(self.done())} "
                    f"finished steps stand in {self.folder.record}. Resume with the same command: "
                    f"gfqual qualify --plan {self.plan.get('source', self.plan['name'])} --out {self.folder.root}"
                )
                return INTERRUPTED
            self.records[step["name"]] = record
            spent_estimate += step["estimate_s"]
            elapsed = time.monotonic() - start
            session.update(wall_s=round(elapsed, 1), steps_run=session["steps_run"] + 1)
            self.write(session)
            self.progress(
                f"{tag}: {record['status'].upper()} (exit {record['rc']}) in {_fmt_s(record['wall_s'])} "
                f"(estimate {_fmt_s(step['estimate_s'])}); elapsed {_fmt_s(elapsed)} of ~{_fmt_s(todo_estimate)}"
                + (f"; {record['reason']}" if record["reason"] else "")
                + f"; log {self.folder.logs / (step['name'] + '.log')}"
            )
        return 0

    def clear(self, step: dict) -> None:
        """Remove what an earlier attempt left under the step's names, so nothing stale reads as
        this run's output (a sweep's partial rows are kept when the step itself is unchanged:
        they resume it)."""
        prev = self.records.get(step["name"])
        same = prev is not None and prev.get("identity") == self.identity[step["name"]]
        paths = [self.folder.results / o for o in step["outputs"]] + [
            self.folder.root / d for d in step.get("data", [])
        ]
        for path in paths:
            leftovers = [path] + ([] if same else list(path.parent.glob(path.name + ".partial*")))
            for p in leftovers:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()

    def run_step(self, step: dict) -> dict:
        """One step, with its retries; the plan_step record of its last attempt."""
        self.clear(step)
        log = self.folder.logs / f"{step['name']}.log"
        log.unlink(missing_ok=True)
        earlier: list[str] = []
        started, start = now_utc(), time.monotonic()
        for attempt in range(1, step.get("retries", 0) + 2):
            rc, reason = self.attempt(step, log, attempt)
            status, reason = self.judge(step, rc, reason)
            if status != "error" or attempt > step.get("retries", 0):
                break
            earlier.append(f"attempt {attempt}: {reason}")
            self.progress(f"    attempt {attempt} ended in error ({reason}); running it again to resume")
        if earlier:
            reason = "; ".join([*earlier, f"attempt {attempt}: {reason or status}"])
        return {
            "record": "plan_step",
            "variant": "-",
            "backend": "-",
            "precision": "-",
            "step": step["name"],
            "gate": step["gate"],
            "status": status,
            "rc": rc,
            "wall_s": round(time.monotonic() - start, 2),
            "estimate_s": float(step["estimate_s"]),
            "outputs": ",".join(step["outputs"]),
            "reason": reason,
            "command": show_command(step),
            "identity": self.identity[step["name"]],
            "attempts": attempt,
            "started": started,
            "log": str(log.relative_to(self.folder.root)),
        }

    def attempt(self, step: dict, log: Path, attempt: int) -> tuple[int | None, str | None]:
        """Run the command once from the qualification folder: (exit code or None on a timeout, reason)."""
        timeout = step.get("timeout_s", max(600.0, 5 * step["estimate_s"]))
        with open(log, "a") as fh:
            fh.write(f"$ {show_command(step)}  # attempt {attempt}, {now_utc()}\n")
            fh.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness", *step_command(step)],
                cwd=self.folder.root,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
            try:
                return proc.wait(timeout=timeout), None
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return None, f"timed out after {timeout:.0f} s and was killed"
            except KeyboardInterrupt:
                try:  # the terminal's Ctrl-C reached the step too: give it a moment to end
                    proc.wait(timeout=20)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    proc.kill()
                    proc.wait()
                raise

    def judge(self, step: dict, rc: int | None, reason: str | None) -> tuple[str, str | None]:
        """reported: ran to completion (exit 0 or 1, its verdict in its outputs); skipped: exit 3,
        cannot run here; error: anything else, or no output written."""
        log = self.folder.logs / f"{step['name']}.log"
        if rc is None:
            return "error", reason
        if rc < 0:
            return "error", f"killed by signal {signal.Signals(-rc).name}: {log_tail(log)}"
        if rc == 3:
            return "skipped", log_tail(log)
        if rc not in (0, 1):
            return "error", f"exit {rc}: {log_tail(log)}"
        missing = [o for o in step["outputs"] if not (self.folder.results / o).exists()]
        missing += [d for d in step.get("data", []) if not (self.folder.root / d).exists()]
        if missing:
            return "error", f"exit {rc} but wrote no {', '.join(missing)}: {log_tail(log)}"
        return "reported", None


def log_tail(log: Path, lines: int = 3, chars: int = 500) -> str:
    """The lines that say why a step ended: gfqual's own error line (bad input, cannot run here,
    a kernel fault) when there is one, else the last lines (a traceback's exception, a crash)."""
    text = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    errors = [ln for ln in text if ln.startswith("gfqual: error:")]
    picked = errors[-1:] if errors else text[-lines:]
    return " | ".join(picked)[-chars:] or "no output"
