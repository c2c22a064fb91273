"""The command-line contract a CI relies on: 0 pass / done, 1 fail, 2 bad input (one line naming
the option or file and the fix), 3 cannot run here, 4 internal error (traceback kept); no output
replaced without --overwrite, and outputs checked before any work."""

from __future__ import annotations

import json
import pickle

import pytest

from harness.capability import probe
from harness.cli import main

pytestmark = pytest.mark.skipif(probe().cuda, reason="the CPU side of the contract (a GPU runs TE instead)")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    assert main(["init", "--variant", "V1-10M", "--out", str(root / "hf")]) == 0
    assert main(["convert", "--from", str(root / "hf"), "--to", "te", "--out", str(root / "te")]) == 0
    return root


def _parity(ckpts, *extra):
    return main(
        [
            "parity",
            "--reference",
            str(ckpts / "hf"),
            "--candidate",
            str(ckpts / "te"),
            "--cells",
            "2",
            "--length",
            "16",
            *extra,
        ]
    )


def test_cuda_asked_on_a_cpu_cannot_run_here(ckpts, capsys):
    assert _parity(ckpts, "--device", "cuda", "--backend", "te-format-torch") == 3
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_parity_defaults_on_a_cpu_name_the_backend_that_can(ckpts, capsys):
    assert _parity(ckpts) == 3
    assert "--backend te-format-torch" in capsys.readouterr().err


def test_results_outputs_are_checked_before_work_and_never_replaced(ckpts, tmp_path, capsys):
    other = tmp_path / "notes.json"
    other.write_text("not a results file")
    assert _parity(ckpts, "--backend", "te-format-torch", "--json", str(other)) == 2
    err = capsys.readouterr()
    assert "--json" in err.err and "--overwrite" in err.err and "PASS" not in err.out
    assert other.read_text() == "not a results file"
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert _parity(ckpts, "--backend", "te-format-torch", "--json", str(a_file / "r.json")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert _parity(ckpts, "--backend", "te-format-torch", "--json", str(other), "--overwrite") == 0
    assert other.read_text().startswith("{")


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--cells", "0"], "--cells"),
        (["--length", "-5"], "--length"),
        (["--length", "0"], "--length"),
        (["--micro-batch", "two"], "--micro-batch"),
    ],
)
def test_counts_must_be_positive(ckpts, capsys, argv, option):
    with pytest.raises(SystemExit) as exit_:
        main(["parity", "--reference", str(ckpts / "hf"), "--candidate", str(ckpts / "te"), *argv])
    assert exit_.value.code == 2 and option in capsys.readouterr().err


def test_te_embedding_on_a_cpu_cannot_run_here(tmp_path, capsys, make_tokenized):
    tok = make_tokenized(4, genes=800, max_len=32) / "tok"
    capsys.readouterr()
    assert (
        main(
            [
                "embed",
                "--input",
                str(tok),
                "--variant",
                "V1-10M",
                "--backend",
                "te",
                "--out",
                str(tmp_path / "e.h5ad"),
            ]
        )
        == 3
    )
    assert "te-format-torch" in capsys.readouterr().err and not (tmp_path / "e.h5ad").exists()


def test_synth_never_replaces_a_file(tmp_path, capsys):
    out = tmp_path / "real.h5ad"
    out.write_bytes(b"a copy of real data")
    argv = ["synth", "--out", str(out), "--cells", "4", "--genes", "800"]
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"a copy of real data"
    assert main([*argv, "--overwrite"]) == 0 and out.read_bytes() != b"a copy of real data"
    assert not list(tmp_path.glob(".*partial*"))


def test_synth_with_too_few_genes_for_its_states_is_bad_input(tmp_path, capsys):
    """3 states of 40 program genes need 120 genes: fewer is exit 2 naming the fix, not a crash."""
    out = tmp_path / "s.h5ad"
    assert main(["synth", "--out", str(out), "--cells", "4", "--genes", "100"]) == 2
    assert "give at least 120 genes" in capsys.readouterr().err and not out.exists()
    assert main(["synth", "--out", str(out), "--cells", "4", "--genes", "120"]) == 0


@pytest.mark.parametrize("payload", [pickle.dumps({"a": print}), pickle.dumps({"a": 1})[:7]], ids=["code", "truncated"])
def test_a_refused_dictionary_pickle_names_the_file(tmp_path, capsys, payload):
    folder = tmp_path / "dicts" / "gc30M"
    folder.mkdir(parents=True)
    for stem in ("token_dictionary", "gene_median_dictionary"):
        (folder / f"{stem}_gc30M.pkl").write_bytes(payload)
    assert main(["synth", "--out", str(tmp_path / "s.h5ad"), "--cells", "4", "--genes", "800"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "tokenize",
                "--input",
                str(tmp_path / "s.h5ad"),
                "--variant",
                "V1-10M",
                "--dicts",
                str(tmp_path / "dicts"),
                "--out",
                str(tmp_path / "tok"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "token_dictionary_gc30M.pkl is not a readable Geneformer dictionary" in err and "Traceback" not in err


def test_a_crash_is_exit_4_with_its_traceback(monkeypatch, capsys):
    from harness.cli import checkpoints

    def broken(args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(checkpoints, "cmd_variants", broken)
    assert main(["variants"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "simulated bug" in err and "internal error (exit 4)" in err


def test_a_gpu_sweep_on_a_cpu_is_refused_with_an_estimate(capsys):
    assert main(["bench", "--sweep", "gpu-baseline", "--out", "/tmp/never-written.json"]) == 2
    err = capsys.readouterr().err
    assert "GPU sweep" in err and " h; run it on a GPU, or pass --force" in err


@pytest.mark.parametrize("sweep", ["gpu-max-batch", "gpu-training-max-batch"])
def test_a_largest_batch_search_on_a_cpu_is_refused(sweep, capsys):
    # a search has no fixed points to count (it crashed with exit 4 inside gfqual qualify --plan standard)
    assert main(["bench", "--sweep", sweep, "--out", "/tmp/never-written.json"]) == 2
    err = capsys.readouterr().err
    assert "searches the largest batch that fits" in err and "pass --force" in err


def test_a_long_workload_on_a_cpu_is_refused_with_an_estimate(tmp_path, capsys, make_tokenized):
    tok = make_tokenized(4, genes=800) / "tok"
    capsys.readouterr()
    argv = ["bench", "--workload", "embed", "--cells", str(tok), "--variants", "V1-10M"]
    assert main([*argv, "--repeat-to", "10000000", "--out", str(tmp_path / "w.json")]) == 2
    err = capsys.readouterr().err
    assert "--workload embed" in err and " h; run it on a GPU, or pass --force" in err
    assert not (tmp_path / "w.json").exists()
    assert main([*argv, "--backends", "te-packed", "--out", str(tmp_path / "te.json")]) == 3  # measured nothing
    assert "nothing was measured" in capsys.readouterr().err and (tmp_path / "te.json").exists()


def test_every_option_has_help():
    import argparse

    from harness.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert "exit codes: 0" in (sub.epilog or ""), name
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"gfqual {name} {action.option_strings or action.dest} has no help text"


def test_a_resume_notices_an_input_edited_in_place(tmp_path, interrupt_second_chunk):
    """Same size, same settings, other bytes: the finished chunks came from another input."""
    import os

    from harness.data.stream import tokenize_to_parquet
    from harness.data.synthetic import synthetic_dictionaries
    from harness.data.tokenizer import TokenizerError
    from harness.outputs import Interrupted
    from models.registry import get_variant

    v1 = get_variant("V1-10M")
    h5ad = tmp_path / "s.h5ad"
    assert main(["synth", "--out", str(h5ad), "--cells", "64", "--genes", "800"]) == 0
    dicts = synthetic_dictionaries(v1)
    with pytest.raises(Interrupted, match="interrupted"):
        tokenize_to_parquet(h5ad, v1, dicts, tmp_path / "tok", chunk_size=32, progress=False)
    interrupt_second_chunk()  # the real encoder again
    stat = h5ad.stat()
    data = bytearray(h5ad.read_bytes())
    data[100] ^= 0xFF  # edited in place: same size, and the modification time put back
    h5ad.write_bytes(bytes(data))
    os.utime(h5ad, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(TokenizerError, match="another version of the input"):
        tokenize_to_parquet(h5ad, v1, dicts, tmp_path / "tok", chunk_size=32, progress=False)


def test_shareable_checkpoints_and_one_count_in_the_convert_summary(tmp_path, capsys):
    assert main(["init", "--variant", "V1-10M", "--out", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    assert main(["convert", "--from", str(tmp_path / "hf"), "--to", "te", "--out", str(tmp_path / "te")]) == 0
    line = capsys.readouterr().out
    written = sum(int(n) for n in __import__("re").findall(r"'\w+': (\d+)", line))
    assert f"into {written} (dtypes" in line
    for folder in (tmp_path / "hf", tmp_path / "te"):
        assert folder.stat().st_mode & 0o777 == 0o755
        assert {f.stat().st_mode & 0o777 for f in folder.iterdir()} == {0o644}


def test_perf_gate_names_a_cpu_run(tmp_path, capsys):
    import json

    from harness.results import make_result, write_result

    gpu = make_result("perf", [], {"source": "random-init"}, {}, env={"gpu_name": "NVIDIA H100 80GB HBM3"})
    cpu = make_result("perf", [], {"source": "random-init"}, {}, env={"gpu_name": None})
    write_result(gpu, tmp_path / "gpu.json")
    write_result(cpu, tmp_path / "cpu.json")
    assert main(["perf-gate", "--baseline", str(tmp_path / "gpu.json"), "--run", str(tmp_path / "cpu.json")]) == 2
    err = capsys.readouterr().err
    assert "a CPU (no GPU)" in err and "None" not in err
    assert json.loads((tmp_path / "gpu.json").read_text())["kind"] == "perf"


def test_an_unwritable_results_folder_is_refused_before_work(ckpts, tmp_path, monkeypatch, capsys):
    """A read-only folder (simulated: the suite may run as root, who can write anywhere)."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    assert _parity(ckpts, "--backend", "te-format-torch", "--json", str(locked)) == 2
    captured = capsys.readouterr()
    assert f"cannot write in {locked}" in captured.err and "PASS" not in captured.out and not list(locked.iterdir())


def test_compiler_messages_go_to_a_log_not_the_terminal(tmp_path, capsys):
    import logging

    from harness.cli.common import compiler_log_to_file

    path = compiler_log_to_file(str(tmp_path))
    logging.getLogger("torch._dynamo").warning("torch._dynamo hit config.recompile_limit (8)")
    for handler in logging.getLogger("torch._dynamo").handlers:
        handler.flush()
    assert "recompile_limit" in open(path).read() and "recompile_limit" not in capsys.readouterr().err


def test_gfqual_run_gates_on_the_records_it_wrote(tmp_path, capsys):
    """The main job's summary counts the gating records of the file it wrote: a check that ran is
    counted (a summary of "0 checks" would pass anything)."""
    out = tmp_path / "run.json"
    assert main(["run", "--variants", "V1-10M", "--out", str(out)]) == 0
    written = [r for r in json.loads(out.read_text())["records"] if r.get("gating")]
    assert len(written) >= 2 and all(r["status"] == "pass" for r in written)
    assert f"{len(written)} checks: 0 failed" in capsys.readouterr().out


def test_train_parity_writes_each_training_record_and_gates_on_its_verdicts(tmp_path, capsys):
    """gfqual train-parity on a CPU: the gradients, every step's losses (the report draws them)
    and both verdicts land in a validated results file, and the summary counts the verdicts."""
    from harness.results import read_result

    out = tmp_path / "train.json"
    assert main(["train-parity", "--variants", "V1-10M", "--steps", "3", "--out", str(out)]) == 0
    records = read_result(out)["records"]
    kinds = [r["record"] for r in records]
    assert {"backward_stage", "backward_verdict", "trajectory_verdict"} <= set(kinds)
    for objective in ("mlm", "classify"):  # both, unless told
        steps = [r["step"] for r in records if r["record"] == "trajectory_step" and r["objective"] == objective]
        assert steps == [0, 1, 2], objective
    assert all(r["reference"] == "hf-eager@fp64" for r in records)
    assert "4 training checks: 0 failed" in capsys.readouterr().out
