"""One output rule for every command that writes (harness/outputs.py): a location that cannot be
written, or that holds a user's file, is refused with exit 2 and one line before any work, and
nothing is left behind. One table: every writing subcommand × every bad location."""

from __future__ import annotations

import os

import pytest

from harness.cli import main

# (command line with {out} where the output goes, the option, what the output is)
COMMANDS = {
    "synth": (["synth", "--cells", "4", "--genes", "800", "--out", "{out}"], "file", "s.h5ad"),
    "tokenize": (
        ["tokenize", "--input", "in.h5ad", "--variant", "V1-10M", "--dicts", "synthetic", "--out", "{out}"],
        "new-folder",
        "tok",
    ),
    "embed --out": (["embed", "--input", "tok", "--variant", "V1-10M", "--out", "{out}"], "file", "e.h5ad"),
    "embed --json": (
        ["embed", "--input", "tok", "--variant", "V1-10M", "--out", "fine.h5ad", "--json", "{out}"],
        "results",
        "r.json",
    ),
    "init": (["init", "--variant", "V1-10M", "--out", "{out}"], "new-folder", "ckpt"),
    "convert": (["convert", "--from", "ckpt", "--to", "te", "--out", "{out}"], "new-folder", "te"),
    "parity": (["parity", "--reference", "hf", "--candidate", "te", "--json", "{out}"], "results", "r.json"),
    "run": (["run", "--variants", "V1-10M", "--out", "{out}"], "results", "r.json"),
    "train-parity": (["train-parity", "--variants", "V1-10M", "--out", "{out}"], "results", "r.json"),
    "eval": (["eval", "dosage", "--out", "{out}"], "results", "r.json"),
    "bench --sweep": (["bench", "--sweep", "cpu-smoke", "--out", "{out}"], "file", "r.json"),
    "bench --workload": (["bench", "--workload", "embed", "--cells", "tok", "--out", "{out}"], "results", "r.json"),
    "profile": (["profile", "--variant", "V1-10M", "--out", "{out}"], "results", "r.json"),
    "report": (["report", "--results", "res", "--out", "{out}"], "report-folder", "qual"),
    "report-parity": (["report-parity", "--results", "res", "--out", "{out}"], "report-folder", "parity"),
    "report-downstream": (["report-downstream", "--results", "res", "--out", "{out}"], "report-folder", "down"),
    "report-perf": (["report-perf", "--results", "res", "--out", "{out}"], "report-folder", "perf"),
    "train-band": (["train-band", "--cells", "tok", "--variant", "V1-10M", "--out", "{out}"], "results", "r.json"),
    "qualify": (["qualify", "--plan", "cpu", "--out", "{out}"], "report-folder", "qual"),
    "compare": (["compare", "res", "res", "--out", "{out}"], "report-folder", "cmp"),
}
FOLDERS = ("new-folder", "report-folder")
CASES = ("read-only folder", "missing parent", "under a file", "folder for a file or the reverse", "user's file")
USERS_FILE = {"new-folder": "notes.txt", "report-folder": "report.md"}  # what a user keeps there


def _place(case: str, kind: str, name: str, root, monkeypatch):
    """The output path of one bad case, with what it needs on disk."""
    if case == "read-only folder":
        locked = root / "locked"
        locked.mkdir()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real(p, mode))
        return locked / name  # (simulated: the suite may run as root, who can write anywhere)
    if case == "missing parent":
        return root / "no-such-folder" / name
    if case == "under a file":
        (root / "plain").write_text("a file")
        return root / "plain" / name
    out = root / name
    if case == "folder for a file or the reverse":
        if kind in FOLDERS:
            out.write_text("a file where a folder is expected")
        else:
            out.mkdir()
        return out
    if kind in FOLDERS:  # the user's own file in the way
        out.mkdir()
        (out / {"parity": "parity.md", "cmp": "comparison.md"}.get(name, USERS_FILE[kind])).write_text("mine")
    else:
        out.write_text("mine")
    return out


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_output_is_refused_before_any_work(command, case, tmp_path, monkeypatch, capsys):
    argv, kind, name = COMMANDS[command]
    monkeypatch.chdir(tmp_path)
    out = _place(case, kind, name, tmp_path, monkeypatch)
    before = _snapshot(tmp_path)
    assert main([str(out) if a == "{out}" else a for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gfqual: error:") and str(out.name) in lines[0], captured.err
    assert captured.out == ""  # nothing ran: no summary, no 'note: random weights'
    assert _snapshot(tmp_path) == before  # nothing left behind, the user's file intact


def test_report_files_are_replaced_only_with_overwrite(tmp_path, capsys):
    """A user's report.md survives a report run into its folder; --overwrite replaces it."""
    from harness.results import make_result, write_result

    write_result(make_result("parity", [], {"source": "random-init"}, {}), tmp_path / "res" / "p.json")
    (tmp_path / "qual").mkdir()
    (tmp_path / "qual" / "report.md").write_text("mine")
    argv = ["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "qual")]
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "qual" / "report.md").read_text() == "mine"
    assert main([*argv, "--overwrite"]) == 1  # a results file with no record: nothing judged, INCOMPLETE
    assert (tmp_path / "qual" / "report.md").read_text() != "mine"


def test_an_impossible_size_is_estimated_and_refused_up_front(tmp_path, capsys):
    assert main(["synth", "--cells", "100000000", "--out", str(tmp_path / "s.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "GiB" in err and "lower --cells" in err and not list(tmp_path.iterdir())


def test_a_dataset_without_input_ids_names_the_file_and_the_column(tmp_path, capsys):
    import pandas as pd

    assert main(["synth", "--cells", "4", "--genes", "800", "--out", str(tmp_path / "s.h5ad")]) == 0
    tok = tmp_path / "tok"
    argv = ["tokenize", "--input", str(tmp_path / "s.h5ad"), "--variant", "V1-10M", "--dicts", "synthetic"]
    assert main([*argv, "--out", str(tok), "--max-len", "32"]) == 0
    part = tok / "part-000000.parquet"
    pd.read_parquet(part).drop(columns=["input_ids"]).to_parquet(part)
    capsys.readouterr()
    assert main(["embed", "--input", str(tok), "--variant", "V1-10M", "--out", str(tmp_path / "e.h5ad")]) == 2
    err = capsys.readouterr().err
    assert str(tok) in err and "input_ids" in err and "Traceback" not in err


def test_one_fold_is_bad_input(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "cardiomyopathy", "--folds", "1"])
    assert exit_.value.code == 2 and "at least 2" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the CPU case: TE cannot run")
def test_an_eval_that_compared_nothing_does_not_pass(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["eval", "cardiomyopathy", "--runs", "te@bf16", "--max-cells", "60", "--max-len", "64", "--out", str(out)]
    assert main(argv) == 3
    assert "nothing was compared" in capsys.readouterr().err and out.exists()  # the skips are rows


def test_an_interrupt_is_one_line_exit_130_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Ctrl-C while synth writes its file: no traceback, no half-written file, no temporary."""
    import anndata

    def interrupted(self, path, *args, **kwargs):
        open(path, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", interrupted)
    assert main(["synth", "--cells", "4", "--genes", "800", "--out", str(tmp_path / "s.h5ad")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gfqual: interrupted;") and "run the same command" in err[0]
    assert not list(tmp_path.iterdir())
