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


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    """Every test compiles from scratch: dynamo's caches are per code object for the whole
    process, so compiles of one shared function (a block's forward, conv_nd) by many tests with
    different guards would add up to its recompile limit (8) and fail a later, unrelated test."""
    yield
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def _fp32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in full fp32: by default they run in TF32 on Ampere and later (10-bit
    mantissa), which tests comparing a CUDA result to a CPU fp32 reference would mistake for a
    bug. A no-op without CUDA."""
    if not torch.cuda.is_available():
        yield
        return
    with torch.backends.cudnn.flags(
        enabled=torch.backends.cudnn.enabled,
        benchmark=torch.backends.cudnn.benchmark,
        deterministic=torch.backends.cudnn.deterministic,
        allow_tf32=False,
    ):
        yield


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)], ids=lambda d: f"on_{d}"
)
def device(request: pytest.FixtureRequest) -> str:
    """A trainer/model device: the CPU, and CUDA where there is one (gpu-marked, skipped
    otherwise)."""
    return request.param


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
