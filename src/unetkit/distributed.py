"""torchrun support: read the process group from torchrun's environment, and the few collectives training needs.

`torchrun --nproc-per-node N -m unetkit train CONFIG` starts N copies with RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT set. Each copy trains on its shard of every batch (see data/sampler.py); DistributedDataParallel
averages the gradients, so all ranks hold the same weights. Everything here is a no-op in a single process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from unetkit.errors import UnetkitError


@dataclass(frozen=True)
class World:
    """This process's place: `rank` of `size` processes, `local_rank` on its machine (its GPU index)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, logs, plots and progress bars; the others only compute."""
        return self.rank == 0


def world_from_env() -> World:
    """The world torchrun describes in the environment, or a single process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return World()
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device_name: str, timeout_minutes: float) -> tuple[World, str]:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU); returns the world and the device to use.

    On CUDA each process takes the GPU of its local rank. The timeout bounds every collective, so a rank that
    dies or hangs ends the others with an error instead of a silent hang.
    """
    world = world_from_env()
    if not world.distributed:
        return world, device_name
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if torch.cuda.device_count() <= world.local_rank:
            raise UnetkitError(f"rank {world.rank} wants GPU {world.local_rank} but only "
                               f"{torch.cuda.device_count()} are visible; lower --nproc-per-node")
        torch.cuda.set_device(world.local_rank)
        device_name = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    return world, device_name


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (exact for integer counts such as confusion matrices)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool) -> bool:
    """True when `flag` is true on any rank, so every rank takes the same branch (stop, skip a step)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def rank_max(value: float) -> float:
    """The largest of every rank's `value` (e.g. the slowest rank's clock), so all ranks act on one number."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics), in place.

    Each rank updates its running statistics with its own last batch, so after an epoch they differ between
    ranks; rank 0's are the ones saved in the checkpoint, so validation must use those on every rank to score
    what `evaluate` will score. (DDP sends rank 0's buffers again at the next training forward anyway.)
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        with torch.no_grad():
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(value: object) -> object:
    """Rank 0's `value` on every rank (e.g. the run folder, whose name holds rank 0's clock)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: object) -> list[object]:
    """Every rank's `value`, in rank order, on every rank (e.g. each rank's per-image scores); `[value]` alone
    without torchrun."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [value]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


@contextmanager
def distributed_session(device_name: str, timeout_minutes: float = 10.0) -> Iterator[tuple[World, str]]:
    """`init_distributed` for the length of a `with` block; the process group is left as found."""
    joined = not dist.is_initialized()
    world, device_name = init_distributed(device_name, timeout_minutes)
    try:
        yield world, device_name
    finally:
        if joined:
            shutdown()
