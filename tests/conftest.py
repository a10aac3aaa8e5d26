"""Shared test setup: one thread, deterministic seeds, no stray plugins."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    # Oracle tests need torchvision-based peers that live in the oracle venv only.
    if os.environ.get("FVDM_ORACLES") == "1":
        return
    skip = pytest.mark.skip(reason="needs the oracle venv (pytorch-fid/cd-fvd + torchvision): run `make test-oracles`")
    for item in items:
        if "oracle" in item.keywords:
            item.add_marker(skip)
