"""gfqual: the Geneformer HF ⇄ TransformerEngine qualification suite (command line).

Thin by design: parse, call an engine, print a summary, write results. One module per group of
subcommands, each holding its handlers and their arguments (``register``).
"""

from __future__ import annotations

import argparse
import sys

import harness  # noqa: F401  (sets strict-fp32 defaults before torch touches CUDA)
from harness.cli import checkpoints, data, downstream, parity, perf, qualify, reports
from harness.outputs import Interrupted, interruptible
from models.errors import GfqualError

# Each handler imports what it uses: torch, transformers and TE cost seconds that tokenize, synth,
# variants and the reports never need.

EXIT_CODES = (
    "exit codes: 0 done / pass, 1 fail (a verdict), 2 bad input (the message names the option or file "
    "and the fix), 3 cannot run here (e.g. no GPU for TE), 4 internal error (traceback kept), "
    "130 interrupted (Ctrl-C or SIGTERM; nothing half-written, the message says how to resume)"
)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless there is none or its help already says it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = dict(formatter_class=_Help, epilog=EXIT_CODES)
    parser = argparse.ArgumentParser(prog="gfqual", description=__doc__, **fmt)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (qualify, checkpoints, parity, perf, data, downstream, reports):
        group.register(sub, fmt)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand under the exit-code contract (``models/errors.py``): 0 done / pass,
    1 fail, 2 bad input, 3 cannot run here, 4 internal error (traceback kept), 130 interrupted."""
    args = build_parser().parse_args(argv)
    try:
        with interruptible("no output was written: run the same command again"):
            return args.func(args)
    except Interrupted as exc:
        print(f"gfqual: {exc}", file=sys.stderr)
        return exc.exit_code
    except GfqualError as exc:
        print(f"gfqual: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        import traceback

        traceback.print_exc()
        print(
            "gfqual: internal error (exit 4): a bug or a broken environment, not a verdict; the traceback is above",
            file=sys.stderr,
        )
        return 4
