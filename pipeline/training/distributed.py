"""Data-parallel training over processes (torch DDP): each process's place in the world, the
few collectives the trainer needs, and the launcher behind ``train --nproc-per-node``.

A training process learns its place from the variables torch's elastic launcher (torchrun)
sets: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``; without them it is
alone (rank 0 of 1) and nothing here talks to another process. The backend is gloo on the
CPU and NCCL on CUDA, where each process takes the GPU of its local rank.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    Attributes:
        rank: 0 writes the run folder (checkpoints, metrics, status).
        size: processes in all, on every node.
        local_rank: this process's index on its node (its GPU).
        local_size: processes on this node (they share its cores).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self) -> torch.device:
        """The local rank's GPU where there is one, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")


def current_world() -> World:
    """The world torchrun describes in the environment (rank 0 of 1 without it).

    Raises:
        ValueError: the variables are there but not whole numbers.
    """
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be whole numbers (torchrun sets "
                         "them).") from None
    return World(rank, size, local_rank, local_size)


def join(world: World, device: torch.device) -> None:
    """Join the process group (once per process; nothing for a world of one)."""
    if world.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait until every rank is here."""
    if world.distributed:
        dist.barrier()


def shard(items: Sequence, world: World) -> list:
    """This rank's share of ``items``: every ``size``-th, from its rank (no item twice, none
    padded in: a series is scored once in the validation AUCs)."""
    return list(items[world.rank::world.size])


def from_main(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object made by this program)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any, world: World) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    values: list = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """Whether ``flag`` is true on some rank (all ranks agree: one stops, all stop)."""
    if not world.distributed:
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def mean_over_ranks(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a tensor over the ranks."""
    if not world.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world.size


def sync_buffers(module: torch.nn.Module, world: World) -> None:
    """Rank 0's buffers (batch-norm statistics) everywhere: every rank then validates the
    network rank 0 saves."""
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


class DenseHeads(torch.nn.Module):
    """The network's dense heads as its ``forward``: DDP synchronises gradients only through
    the forward of the module it wraps, and training calls ``dense``."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.network.dense(x)


def data_parallel(network: torch.nn.Module, world: World, device: torch.device) -> Callable:
    """What training calls for the dense heads: the network's own ``dense`` in a world of one,
    else the heads wrapped in `DistributedDataParallel` (gradients averaged over the ranks;
    the network's parameters and optimiser stay those of ``network``)."""
    if not world.distributed:
        return network.dense
    from torch.nn.parallel import DistributedDataParallel

    # The 1x1x1 heads' gradients come in another (equivalent: every spatial size is 1) stride
    # than their channels-last parameters; DDP copies them into its buckets and warns each time.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(DenseHeads(network), device_ids=[device] if device.type == "cuda" else None,
                                   gradient_as_bucket_view=True)


def launch(arguments: list[str], processes: int) -> int:
    """Run ``python -m pipeline train ARGUMENTS`` in ``processes`` DDP processes on this
    machine under torch's elastic launcher (a standalone rendezvous on a free local port);
    returns 0, or the exit status of the first process that failed (its error is on stderr).

    Raises:
        ValueError: fewer than one process.
    """
    if processes < 1:
        raise ValueError(f"--nproc-per-node must be at least 1, not {processes}.")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "pipeline", "train", *arguments)
    except ChildFailedError as failed:
        return failed.get_first_failure()[1].exitcode or 1
    return 0
