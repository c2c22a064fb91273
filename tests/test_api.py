"""The Python API (harness/api.py): the README's example runs as written, the package import stays
light, and the API and the command line give the same outputs (one code path)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _readme_example()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(24, 256)" in done.stdout and "ENSG" in done.stdout and "\nTrue\n" in done.stdout
    assert (tmp_path / "parity.json").is_file()


def test_importing_the_package_loads_no_heavy_library():
    code = "import sys, harness; harness.tokenize; print(sorted({'torch', 'pandas', 'anndata'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_api_and_command_line_give_the_same_embeddings(tmp_path):
    import anndata

    from harness import api
    from harness.cli import main
    from harness.data.synthetic import synthetic_anndata, synthetic_dictionaries
    from models.registry import get_variant

    adata = synthetic_anndata(synthetic_dictionaries(get_variant("V1-10M")), n_cells=12, n_genes=1000, seed=4)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    tokens = api.tokenize(tmp_path / "cells.h5ad", "V1-10M", out=tmp_path / "tok", max_len=48)
    assert tokens.table["cell_id"].tolist() == list(adata.obs_names)
    mine = api.embed(tokens, "V1-10M", precision="fp32")
    argv = ["embed", "--input", str(tmp_path / "tok"), "--variant", "V1-10M", "--out", str(tmp_path / "e.h5ad")]
    assert main([*argv, "--precision", "fp32", "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    theirs = anndata.read_h5ad(tmp_path / "e.h5ad")
    assert mine.obs_names.tolist() == theirs.obs_names.tolist()
    np.testing.assert_array_equal(mine.obsm["X_geneformer"], theirs.obsm["X_geneformer"])
    frame = api.load_results(tmp_path / "r.json")
    assert frame.loc[0, "workload"] == "embed" and frame.loc[0, "cells"] == 12


def test_parity_result_matches_what_the_command_line_writes(tmp_path):
    from harness import api
    from harness.results import read_result

    check = api.parity(variant="V1-10M", backend="te-format-torch", length=32, out=tmp_path / "p.json")
    written = read_result(tmp_path / "p.json")
    written.pop("_source")  # where read_result found the file: known in memory only, never written
    assert check.result == written and check.passed
    assert len(check.stages) == sum(r["record"] == "stage" for r in written["records"]) > 3
    with pytest.raises(Exception, match="both reference and candidate"):
        api.parity(tmp_path, variant="V1-10M")
