"""Shared fixtures: a spatial_dims fixture, seeding, and GPU-marker handling."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=[1, 2, 3, 4], ids=lambda n: f"{n}d")
def spatial_dims(request: pytest.FixtureRequest) -> int:
    """Every spatial_dims the fast suite covers (5-D tests are marked slow where they are costly)."""
    return request.param


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tiny-model tests: on a loaded 2-core CPU, spinning OpenMP threads
    make small ops many times slower (opt in with ``pytestmark = usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
