"""Fixtures of the CUDA tests: deterministic kernels, tiny models built once, each run trained once."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts: deterministic GEMMs

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import factories  # noqa: E402
from tests.gpu import helpers  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): tests sharing one cached run (pytest-xdist)")


@pytest.fixture(scope="package", autouse=True)
def deterministic():
    """Deterministic kernels, so an interrupted and resumed run can equal an uninterrupted one bit for bit
    (warn_only: an op without a deterministic kernel warns instead of failing the test). Package scope:
    the rest of a suite run on a GPU machine keeps its usual kernels."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(was)


@pytest.fixture(scope="session", params=helpers.DEVICES or ["none"])
def device(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """arch → a tiny random model folder, built on first use."""
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = helpers.build(tmp_path_factory.mktemp(f"tiny-{arch}"), arch)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    files: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in files:
            files[arch] = factories.write_jsonl(tmp_path_factory.mktemp(f"data-{arch}") / "train.jsonl",
                                                helpers.rows_for(arch))
        return files[arch]

    return get


@pytest.fixture(scope="session")
def trained(tmp_path_factory, model_dir, data_file):
    """(device, method, arch) → (RunResult, adapter folder) of the uninterrupted run, trained once."""
    from smt_core import run

    runs: dict[tuple[str, str, str], tuple] = {}

    def get(device: str, method: str, arch: str):
        key = (device, method, arch)
        if key not in runs:
            out = tmp_path_factory.mktemp(f"{device}-{method}-{arch}") / "out"
            runs[key] = (run(helpers.spec_for(device, method, model_dir(arch), data_file(arch), out)), out)
        return runs[key]

    return get
