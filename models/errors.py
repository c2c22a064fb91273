"""The exit-code contract of every gfqual command, as exceptions (``harness.cli.main`` maps them).
They live at the bottom layer so that models, harness and reports can all raise them:

  0  pass / done
  1  fail: a verdict (parity outside tolerance, TE outside its HF peer's bound, a perf regression,
     a kernel crash: ``KernelCrash``)
  2  bad input: ``GfqualError`` — one line naming the file or option and the fix
  3  cannot run here: ``CannotRunHere`` — this machine lacks what the run needs (a GPU, TE, a recipe)
  4  internal error: anything else — a bug or a broken environment, never a verdict; traceback kept
  130 interrupted: Ctrl-C or SIGTERM (``harness.outputs.Interrupted``), nothing half-written; the
     line says how to resume

Only ``GfqualError`` and its subclasses become exit 2 or 3: a ``ValueError`` from deep inside a
library is an internal error, so CI can tell a broken run from bad input and from a regression.
"""

from __future__ import annotations


class GfqualError(Exception):
    """Bad input the user can fix (exit 2)."""

    exit_code = 2


class UsageError(GfqualError, ValueError):
    """A bad option value, file or combination of options."""


class CannotRunHere(GfqualError):
    """This machine cannot run what was asked (exit 3); the message says what can."""

    exit_code = 3


class KernelCrash(GfqualError):
    """A GPU kernel faulted (illegal memory access, CUDA error): a failure in itself (exit 1), and
    the process's CUDA context is unusable after it, so the run stops with the fault recorded."""

    exit_code = 1
