"""Options and result writing for ``pytest suites/parity`` (the CI gate).

    pytest suites/parity                                   # CPU: all variants, te-format-torch, fp32
    pytest suites/parity --backends te --precisions fp32 bf16 fp8-current --length 4096
    pytest suites/parity --h5ad cells.h5ad --dicts geneformer_dicts/    # real cells
    pytest suites/parity -k attention_kernel --precisions bf16 fp8-delayed-dpa --length 4096
                                                           # TE's attention kernel alone

Every parametrised run adds its records to one versioned results file written at the end of
the session (``--results-out``, default results/local/).
"""

from __future__ import annotations

import pytest

from harness.backend_names import backend_spec, backends_where
from harness.precision import PRECISIONS
from models.registry import VARIANTS

# the session's parity records and specs, kept on the pytest config (no module state)
_LOG = pytest.StashKey[tuple[list[dict], list]]()


def pytest_addoption(parser):
    group = parser.getgroup("gfqual parity")
    group.addoption("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    group.addoption("--precisions", nargs="+", default=["fp32"], choices=[p for p in PRECISIONS if p != "fp64"])
    group.addoption(
        "--backends",
        nargs="+",
        default=["te-format-torch", "te", "te-packed"],
        choices=backends_where(family="te"),
    )
    group.addoption("--length", type=int, default=64, help="longest cell (tokens); default 64 (CPU CI)")
    group.addoption("--cells", type=int, default=4)
    group.addoption("--micro-batch", type=int, default=4)
    group.addoption("--results-out", default=None, help="results file or folder")
    group.addoption("--h5ad", default=None, help="real cells: AnnData of raw counts (needs --dicts)")
    group.addoption("--dicts", default=None, help="Geneformer dictionary folder")


def pytest_generate_tests(metafunc):
    opt = metafunc.config.getoption
    if "kernel_case" in metafunc.fixturenames:  # TE's attention alone: each variant's head shape
        cases = [
            (v, p, min(opt("--length"), VARIANTS[v].context)) for v in opt("--variants") for p in opt("--precisions")
        ]
        metafunc.parametrize(
            "kernel_case",
            [pytest.param(c, marks=pytest.mark.gpu) for c in cases],
            ids=[f"{v}/attention-kernel/{p}" for v, p, _ in cases],
        )
    if "parity_spec" not in metafunc.fixturenames:
        return
    from harness.parity.run import ParitySpec

    specs = [
        ParitySpec(
            v,
            b,
            p,
            n_cells=opt("--cells"),
            max_len=min(opt("--length"), VARIANTS[v].context),
            micro_batch=opt("--micro-batch"),
            h5ad=opt("--h5ad"),
            dicts=opt("--dicts"),
        )
        for v in opt("--variants")
        for p in opt("--precisions")
        for b in opt("--backends")
    ]
    metafunc.parametrize(
        "parity_spec",
        # TE itself needs a CUDA GPU; the TE-layout plain-PyTorch forward runs anywhere
        [pytest.param(s, marks=[pytest.mark.gpu] if backend_spec(s.candidate).needs_te else []) for s in specs],
        ids=[s.key for s in specs],
    )


@pytest.fixture(scope="session")
def parity_log(pytestconfig):
    """Collects the records of every parity test; written as one result at session end."""
    return pytestconfig.stash.setdefault(_LOG, ([], []))


def pytest_sessionfinish(session, exitstatus):
    records, specs = session.config.stash.get(_LOG, ([], []))
    if not records:
        return
    from harness.parity.run import run_config
    from harness.results import make_result, write_result
    from models.random_weights import random_weights_block

    path = write_result(
        make_result("parity", records, random_weights_block(0), run_config(specs)),
        session.config.getoption("--results-out"),
    )
    session.config.pluginmanager.get_plugin("terminalreporter").write_line(f"parity results: {path}")
