"""Messages a new user meets (issue 29): each names what is wrong and the fix, and none misleads."""

from __future__ import annotations

import pytest

from harness.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 24-cell synthetic .h5ad and its V1 tokens."""
    root = tmp_path_factory.mktemp("msg")
    assert main(["synth", "--cells", "24", "--genes", "800", "--out", str(root / "s.h5ad")]) == 0
    tok = ["tokenize", "--input", str(root / "s.h5ad"), "--variant", "V1-10M", "--dicts", "synthetic"]
    assert main([*tok, "--out", str(root / "tok"), "--max-len", "64", "--quiet"]) == 0
    return root


def _run(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_a_folder_given_as_tokenize_input_is_called_a_folder(data, tmp_path, capsys):
    argv = ["tokenize", "--input", str(data), "--variant", "V1-10M", "--dicts", "synthetic"]
    rc, text = _run([*argv, "--out", str(tmp_path / "t")], capsys)
    assert rc == 2 and "is a folder" in text and "does not exist" not in text


def test_a_file_given_as_checkpoint_is_called_a_file(data, capsys):
    rc, text = _run(["verify", "--checkpoint", str(data / "s.h5ad"), "--variant", "V1-10M"], capsys)
    assert rc == 2 and "is a file" in text and "does not exist" not in text


def test_a_missing_embed_input_is_called_missing(tmp_path, capsys):
    rc, text = _run(["embed", "--input", str(tmp_path / "nope"), "--variant", "V1-10M", "--out", "e.h5ad"], capsys)
    assert rc == 2 and "does not exist" in text and "not a finished" not in text


def test_fp8_on_an_hf_backend_is_bad_input_not_a_machine_limit(data, tmp_path, capsys):
    argv = ["embed", "--input", str(data / "tok"), "--variant", "V1-10M", "--out", str(tmp_path / "e.h5ad")]
    rc, text = _run([*argv, "--backend", "hf-sdpa", "--precision", "fp8-delayed"], capsys)
    assert rc == 2 and "no FP8 path on any machine" in text


def test_a_raised_token_budget_says_so(data, tmp_path, capsys):
    argv = ["embed", "--input", str(data / "tok"), "--variant", "V1-10M", "--out", str(tmp_path / "e.h5ad")]
    rc, text = _run([*argv, "--max-tokens", "10", "--quiet"], capsys)
    assert rc == 0 and "10 tokens per batch:" not in text and "--max-tokens 10 raised" in text


def test_steps_below_zero_name_zero_as_the_least(capsys):
    with pytest.raises(SystemExit):
        main(["train-parity", "--steps", "-1"])
    assert "at least 0" in capsys.readouterr().err


def test_real_cells_without_dictionaries_name_dicts(data, tmp_path, capsys):
    assert main(["init", "--variant", "V1-10M", "--out", str(tmp_path / "hf")]) == 0
    assert main(["convert", "--from", str(tmp_path / "hf"), "--to", "te", "--out", str(tmp_path / "te")]) == 0
    argv = ["parity", "--reference", str(tmp_path / "hf"), "--candidate", str(tmp_path / "te")]
    rc, text = _run([*argv, "--backend", "te-format-torch", "--h5ad", str(data / "s.h5ad")], capsys)
    assert rc == 2 and "--dicts" in text


def test_normalised_x_with_a_counts_layer_names_the_layer(data, tmp_path, capsys):
    import anndata
    import numpy as np

    adata = anndata.read_h5ad(data / "s.h5ad")
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X.astype(np.float32)
    adata.X.data = np.log1p(adata.X.data)
    adata.write_h5ad(tmp_path / "log.h5ad")
    argv = ["tokenize", "--input", str(tmp_path / "log.h5ad"), "--variant", "V1-10M", "--dicts", "synthetic"]
    rc, text = _run([*argv, "--out", str(tmp_path / "t")], capsys)
    assert rc == 2 and "--layer counts" in text and not (tmp_path / "t.partial").exists()
    assert _run([*argv, "--out", str(tmp_path / "t"), "--layer", "counts"], capsys)[0] == 0


def test_no_progress_bar_when_stderr_is_not_a_terminal(data, tmp_path, capsys):
    argv = ["tokenize", "--input", str(data / "s.h5ad"), "--variant", "V1-10M", "--dicts", "synthetic"]
    rc, text = _run([*argv, "--out", str(tmp_path / "t")], capsys)  # capsys: not a terminal
    assert rc == 0 and "tokenizing" not in text and "it/s" not in text and "cell/s" not in text


def test_a_pickle_with_code_is_refused_in_our_words(tmp_path, capsys):
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    assert main(["init", "--variant", "V1-10M", "--out", str(tmp_path / "hf")]) == 0
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save({"a": Payload()}, tmp_path / "hf" / "pytorch_model.bin")
    rc, text = _run(["verify", "--checkpoint", str(tmp_path / "hf"), "--variant", "V1-10M"], capsys)
    assert rc == 2 and "this ran" not in text
    assert "Python objects besides tensors" in text and "print" in text and "weights_only" not in text
