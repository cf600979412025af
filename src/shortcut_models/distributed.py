"""Devices and processes: which device and precision a run uses, and under `torchrun` who am I
and the few collectives the library needs.

Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op for a single
process, so the same code path serves a laptop and a cluster.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from shortcut_models.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()  # a plain one-process run


def unwrap(net: torch.nn.Module, through_ddp: bool = True) -> torch.nn.Module:
    """The network under torch.compile's wrapper and (with `through_ddp`) DDP's: the plain
    module whose attributes and forward-mode derivatives the objectives use."""
    net = getattr(net, "_orig_mod", net)
    if through_ddp and isinstance(net, torch.nn.parallel.DistributedDataParallel):
        net = net.module
    return net


def launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def setup(device: torch.device) -> tuple[torch.device, Dist]:
    """Join the process group torchrun set up the environment for (NCCL on GPUs, gloo on CPU);
    returns this process's device (under torchrun 'cuda' means cuda:LOCAL_RANK) and its place.
    A plain run gets `device` back and the one-process Dist."""
    world = launched_world_size()
    if world <= 1:
        return device, SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return device, Dist(rank=rank, world_size=dist.get_world_size(), local_rank=local_rank)


def teardown(wait: bool = True) -> None:
    """Leave the process group, after every rank has got here when `wait` (a rank that tears its
    gloo connections down while another still uses them can abort that rank at exit). A failing
    rank does not wait: torchrun stops the others."""
    if dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def all_mean(values: torch.Tensor, info: Dist) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is left alone)."""
    if not info.enabled:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def any_rank(flag: bool, info: Dist, device: torch.device) -> bool:
    """True on every rank when it is true on some rank (a stop signal, a bad loss)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shard_chunks(
    num: int, chunk: int, info: Dist, make: Callable[[int, int], torch.Tensor]
) -> torch.Tensor:
    """cat(make(start, stop) for consecutive chunks of `chunk` rows), chunks dealt round-robin to
    ranks and gathered in order on every rank: the same tensor as one process computing them all."""
    starts = list(range(0, num, chunk))
    mine = {s: make(s, min(s + chunk, num)).cpu() for s in starts[info.rank :: info.world_size]}
    if not info.enabled:
        return torch.cat([mine[s] for s in starts])
    gathered: list[dict[int, torch.Tensor] | None] = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    found: dict[int, torch.Tensor] = {}
    for part in gathered:
        found.update(part or {})
    return torch.cat([found[s] for s in starts])


def main_first(info: Dist, make: Callable[[], T]) -> T:
    """Run `make` on rank 0, then on the others: what it caches on disk (a trained classifier,
    reference features) is computed once and read by the rest."""
    if info.is_main:
        out = make()
        barrier(info)
        return out
    barrier(info)
    return make()
