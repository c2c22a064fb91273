"""The output rule every command that writes follows, and the interrupt rule of long commands.

Outputs: checked before any work (``check_output``), so a bad location costs no compute and
leaves nothing behind: the parent folder must exist (nothing is created above the output) and be
writable; a file is never where a folder is expected, nor the reverse; a user's file is never
replaced without ``--overwrite``. Then written under a temporary name and renamed when complete
(``written``): a crash or Ctrl-C leaves no half-written file, and its temporary is removed.

Interrupts: Ctrl-C or SIGTERM becomes ``Interrupted`` (exit 130, one line that says how to
resume); ``harness.cli.main`` maps it like every other ``GfqualError``.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from models.errors import GfqualError, UsageError

# What an output is: a file, a results target (a .json file, or a folder that gets a new file
# name), a new folder (a dataset, a checkpoint) or a report folder (its named files regenerated).
OUTPUT_KINDS = ("file", "results", "new-folder", "report-folder")


class Interrupted(GfqualError):
    """Ctrl-C or SIGTERM: the run stopped, nothing half-written; the message says how to resume."""

    exit_code = 130


def check_output(
    path: str | os.PathLike | None,
    kind: str = "file",
    overwrite: bool = False,
    option: str = "--out",
    replaces: tuple[str, ...] = (),
) -> None:
    """Refuse, before any work, an output location that cannot be written or would replace a
    user's file (``replaces``: glob patterns of the files a report folder's render writes)."""
    if path is None:
        return
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    out = Path(path)
    wants_folder = kind in ("new-folder", "report-folder") or (kind == "results" and out.suffix != ".json")
    if wants_folder and out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} is a file; give a folder (a new one, or one of yours for results)")
    if not wants_folder and out.is_dir():
        raise UsageError(f"{option} {out} is a folder; give the name of a file to write (in it, or elsewhere)")
    if kind == "new-folder" and out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{option} {out} already exists and is not empty; choose a new folder")
    existing = sorted(p for pattern in replaces for p in out.glob(pattern)) if out.is_dir() else []
    if not wants_folder and out.exists():
        existing = [out]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise UsageError(f"{option}: {names} exists; choose another {option} or pass --overwrite to replace it")
    folder = out if out.is_dir() else out.parent
    above = folder
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise UsageError(f"{option} {out}: {above} is a file, not a folder; choose a path under a folder")
    if not folder.is_dir():
        raise UsageError(f"{option} {out}: folder {folder} does not exist; create it first (mkdir -p {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out}: cannot write in {folder} (read-only); choose a writable location")


@contextmanager
def written(out: str | os.PathLike):
    """A temporary path beside ``out`` (a file or a folder) that becomes ``out`` when the block
    completes; on any failure, Ctrl-C included, the temporary is removed and ``out`` untouched."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def interruptible(resume: str):
    """Ctrl-C or SIGTERM inside the block becomes ``Interrupted`` with ``resume`` (how to go on)."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: SIGTERM keeps its handler
        previous = None
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {resume}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
