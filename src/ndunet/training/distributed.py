"""torch.distributed glue for runs launched by `torchrun` (gloo on CPU, nccl on CUDA).

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op, so the same
trainer code runs single-process."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's rank, local rank and the world size (1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (if any). Returns rank / world information."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(destroy_at_exit)  # the group is ndunet's: it tears it down
    return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def destroy_at_exit() -> None:
    """Destroy the process group before the interpreter exits (registered with atexit by
    :func:`init_distributed` when it created the group). Left to the interpreter's teardown,
    gloo's worker threads can be destroyed while still joinable, which aborts the process
    ("terminate called without an active exception", seen under torchrun on a loaded CPU), and
    torch asks NCCL users for it so that pending work finishes."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """ "auto": cuda (this process's local rank), then mps, then cpu; else the given device."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_gpu(local_rank, spec))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device={spec!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} but CUDA is not available; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", _local_gpu(local_rank, spec))
    return device


def use_device(device: torch.device, info: DistInfo) -> None:
    """Make ``device`` this process's current CUDA device under DDP: NCCL collectives that take
    no tensor of ours (barrier, all_gather_object) run on the current device, which is
    otherwise cuda:0 on every rank (NCCL fails on a GPU shared by two ranks)."""
    if info.enabled and device.type == "cuda":
        torch.cuda.set_device(device)


def _local_gpu(local_rank: int, spec: str) -> int:
    """This process's GPU: one per process on the machine, never shared (NCCL refuses that)."""
    count = torch.cuda.device_count()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world > count:
        raise ValueError(
            f"device={spec!r}: torchrun started {local_world} processes on this machine but it has "
            f"{count} CUDA device(s); start at most {count} (--nproc_per_node) or set device='cpu'"
        )
    return local_rank


def all_reduce_sum(
    tensors: list[torch.Tensor], info: DistInfo, device: torch.device
) -> list[torch.Tensor]:
    """Sum tensors over ranks (returned on CPU; inputs unchanged)."""
    if not info.enabled:
        return tensors
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    out = []
    for t in tensors:
        buf = t.to(comm, copy=True)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        out.append(buf.cpu())
    return out


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """All ranks' `obj` as a list (index = rank); `[obj]` when not distributed."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()
