"""Training on several processes, GPUs or machines: torchrun's environment and torch.distributed's collectives.

Started by torchrun (`torchrun --nproc_per_node N -m core train ...`), each process reads its rank from the
environment torchrun sets and joins the process group: NCCL between CUDA GPUs, gloo on CPUs. The recipe's batch is
the global batch: each process trains on its share of it, and DistributedDataParallel averages the gradients. Every
process evaluates its share of the pictures and the results are gathered back in the data set's order, so every
process takes the same decisions (the best epoch, divergence, a cancel) at the same batch. Only process 0 prints
and saves.

A `World` of one process (`SINGLE`, or torchrun's world of one) makes every collective here a no-op but the
placement; the training code is the same.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from core.device import pick_device
from core.errors import DEVICE, ConfigError, StudioError, TrainingCancelled

TIMEOUT_ENV = "STUDIO_DIST_TIMEOUT"
# How long a process waits for the others at a collective before it gives up with ProcessLost. A process that dies
# is noticed at once (its connections close); this bounds the wait for one that hangs or is cut off.
DEFAULT_TIMEOUT_S = 300.0
# Each process's random numbers (crops, flips, dropout, its share's order) are drawn from the run's seed plus this
# many times its rank: process 0 draws what a run of one process draws.
SEED_STRIDE = 1_000_003


DIFFERENT_WEIGHTS = ("The processes ended training with different weights (process {rank} differs from process 0), so "
                     "the run was not saved. This is a bug in the studio's distributed training: please report it "
                     "with the command you ran.")


# DistributedDataParallel's option not to send the buffers before each forward pass: `broadcast_buffers` until
# torch 2.14 deprecated it (torch older than the pinned one runs on some GPU machines).
NO_BUFFERS_PER_STEP = ("forward_sync_buffers" if "forward_sync_buffers" in
                       inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")


class ProcessLost(StudioError):
    """Another process of the run died, hung past the timeout or could not be reached."""


@dataclass(frozen=True)
class Placement:
    """Where and how a run was trained: one process, or several started by torchrun."""

    hosts: list[str]  # one per process, in rank order
    devices: list[str]  # one per process: "cpu", "cuda:0 (NVIDIA H200)"
    backend: str | None = None  # "gloo" or "nccl"; None for a process that torchrun did not start
    per_process_batch: int | None = None  # the recipe's (global) batch split over the processes
    lr_scaling: str = ""  # how the learning rate was scaled for the global batch, or why it was not
    interruption: str | None = None  # why training stopped early when a process was lost

    @property
    def processes(self) -> int:
        return len(self.hosts)

    def text(self) -> str:
        """In a few words, for tables: "gpu-box · cpu", "2 processes · gpu-box · 2 × cpu (gloo)"."""
        hosts = list(dict.fromkeys(self.hosts))
        where = hosts[0] if len(hosts) == 1 else f"{len(hosts)} hosts"
        kinds = list(dict.fromkeys(device.split(":")[0].split(" ")[0] for device in self.devices))
        if self.processes == 1:
            return f"{where} · {self.devices[0]}" + (f" ({self.backend})" if self.backend else "")
        return f"{self.processes} processes · {where} · {self.processes} × {'/'.join(kinds)} ({self.backend})"

    def describe(self) -> list[str]:
        """Line by line: each process's host and device, and the batch and learning rate as they were split."""
        lines = [f"process {rank}: {host}, {device}" for rank, (host, device) in enumerate(zip(self.hosts,
                                                                                              self.devices))]
        if self.backend:
            lines.append(f"torch.distributed backend {self.backend}; {self.per_process_batch} pictures per process "
                         "in each batch")
        if self.lr_scaling:
            lines.append(f"learning rate: {self.lr_scaling}")
        if self.interruption:
            lines.append(f"stopped early: {self.interruption}")
        return lines

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Placement:
        if not isinstance(data, dict):
            raise TypeError("placement must be an object")
        placement = cls(**data)
        if (not isinstance(placement.hosts, list) or not isinstance(placement.devices, list) or not placement.hosts
                or len(placement.hosts) != len(placement.devices)
                or not all(isinstance(item, str) for item in placement.hosts + placement.devices)):
            raise ValueError("placement must name a host and a device for each process")
        return placement


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds (got {text!r}).") from None
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be positive (got {text!r}).")
    return seconds


@dataclass
class World:
    """The processes that train one run together; a world of one trains alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: not started by torchrun, no process group
    device: torch.device | None = None  # this process's device, when started by torchrun
    control: object = field(default=None, repr=False)  # the gloo group for agreement between the processes

    @property
    def main(self) -> bool:
        """Whether this process prints and saves: process 0."""
        return self.rank == 0

    @property
    def joined(self) -> bool:
        return self.backend is not None

    @property
    def several(self) -> bool:
        return self.size > 1

    def name(self) -> str:
        return f"process {self.rank} of {self.size} on {socket.gethostname()}"

    # ------------------------------------------------------------ devices and the recipe

    def pick_device(self, requested: str) -> torch.device:
        """The device this process trains on: with torchrun, its own GPU (LOCAL_RANK) or the CPU."""
        if not self.joined:
            return pick_device(requested)
        if pick_device(requested).type != self.device.type:
            raise ConfigError(f"The processes were started for {self.device.type}; a run cannot train on "
                              f"{requested} among them.", DEVICE)
        return self.device

    def per_process_batch(self, batch_size: int) -> int:
        """The recipe's batch is the global batch: each process trains on an equal share of it."""
        if batch_size % self.size:
            raise ConfigError(f"The batch size {batch_size} is the batch of all {self.size} processes together, and "
                              f"it cannot be split evenly between them. Choose a batch size that is a multiple of "
                              f"{self.size} (for example {self.size * -(-batch_size // self.size)}), or "
                              "start a number of processes that divides it.")
        return batch_size // self.size

    def seed(self, seed: int | None) -> None:
        """Each process draws its own crops, flips and dropout: seed + SEED_STRIDE x rank."""
        if seed is not None and self.rank:
            torch.manual_seed(seed + SEED_STRIDE * self.rank)

    def placement(self, device: torch.device, batch_size: int) -> Placement:
        """Where each process trains: gathered from all of them."""
        mine = (socket.gethostname(), device_text(device))
        everyone = self.gather_objects(mine)
        hosts, devices = [host for host, _ in everyone], [text for _, text in everyone]
        if not self.joined:
            return Placement(hosts, devices)
        share = self.per_process_batch(batch_size)
        scaling = (f"not scaled: the batch of {batch_size} is the global batch ({share} per process x {self.size} "
                   "processes), DistributedDataParallel averages the gradients over it, and so the recipe's learning "
                   "rate applies as it is" if self.several else "not scaled: one process trains the whole batch")
        return Placement(hosts, devices, self.backend, share, scaling)

    # ------------------------------------------------------------ the model and the data

    def wrap(self, model: nn.Module) -> nn.Module:
        """What runs the training steps: `model` itself, or with several processes wrapped by
        DistributedDataParallel, which averages the gradients in the backward pass."""
        if not self.several:
            return model  # nothing to average; on one H200 the wrapper alone cost 20-30% of an epoch
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are not sent before each forward pass: process 0's evolve from its own batches either way, and
        # sync_buffers gives them to every process after each epoch, one collective instead of one per step.
        return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True,
                                       **{NO_BUFFERS_PER_STEP: False})

    def shard(self, loaders: dict[str, DataLoader], seed: int | None,
              shuffle_train: bool = True) -> dict[str, DataLoader]:
        """The loaders with this process's share of each split: the training pictures as DistributedSampler
        deals them (reshuffled each epoch with `set_epoch`, every process the same number of batches), and every
        `size`-th picture of the others (of all, without `shuffle_train`), whose results `gather_in_order` puts
        back together."""
        if not self.several:
            return loaders
        sharded = {}
        for split, loader in loaders.items():
            if split == "train" and shuffle_train:
                sampler = DistributedSampler(loader.dataset, self.size, self.rank, shuffle=True, seed=seed or 0)
            else:
                sampler = EveryNth(len(loader.dataset), self.rank, self.size)
            sharded[split] = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                                        num_workers=loader.num_workers, persistent_workers=loader.num_workers > 0)
        return sharded

    def batches(self, loader: DataLoader, phase: str, progress: Callable[[str, int, int], None] | None
                ) -> Iterator:
        """The loader's batches, each reported to `progress` once done. A process whose share has a batch fewer
        reports that one too, at the end: every process reports, and so agrees on a cancel, as often."""
        total = self.most_batches(loader)
        done = 0
        for done, item in enumerate(loader, start=1):
            yield item
            if progress:
                progress(phase, done, total)
        for extra in range(done + 1, total + 1):
            if progress:
                progress(phase, extra, total)

    def most_batches(self, loader: DataLoader) -> int:
        """The batches of the largest share of `loader`'s pictures."""
        if not isinstance(loader.sampler, EveryNth):
            return len(loader)
        largest = -(-len(loader.dataset) // self.size)
        return -(-largest // loader.batch_size)

    # ------------------------------------------------------------ collectives

    def any(self, flag: bool) -> bool:
        """Whether any process says yes."""
        if not self.several:
            return flag
        value = torch.tensor([int(flag)])
        self._collective(dist.all_reduce, value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over the processes of `value` (on this process's device)."""
        if self.several:
            self._collective(dist.all_reduce, value)
        return value

    def gather_in_order(self, rows: torch.Tensor, total: int) -> torch.Tensor:
        """The rows of every process's `EveryNth` share, back in the data set's order: `total` rows."""
        if not self.several:
            return rows
        largest = -(-total // self.size)
        padded = torch.zeros((largest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        padded[:len(rows)] = rows
        shares = [torch.empty_like(padded) for _ in range(self.size)]
        self._collective(dist.all_gather, shares, padded)
        return torch.stack(shares, dim=1).flatten(0, 1)[:total]

    def gather_objects(self, value) -> list:
        """`value` of every process, in rank order."""
        if not self.several:
            return [value]
        everyone = [None] * self.size
        self._collective(dist.all_gather_object, everyone, value, group=self.control)
        return everyone

    def broadcast(self, value):
        """Process 0's `value`, on every process."""
        if not self.several:
            return value
        box = [value]
        self._collective(dist.broadcast_object_list, box, src=0, group=self.control)
        return box[0]

    def share_state(self, model: nn.Module) -> None:
        """Process 0's weights and buffers (on the CPU) on every process: all start from the same model."""
        if self.several:
            for value in model.state_dict().values():
                self._collective(dist.broadcast, value, src=0, group=self.control)

    def wait_for_all(self, seconds: float = 0) -> None:
        """Wait until every process gets here: at most `seconds` (or the timeout, if longer). A process that died or
        hangs is named."""
        if self.several:
            timeout = datetime.timedelta(seconds=max(seconds, timeout_seconds()))
            self._collective(dist.monitored_barrier, group=self.control, timeout=timeout, wait_all_ranks=True)

    def sync_buffers(self, model: nn.Module) -> None:
        """Process 0's buffers (BatchNorm's running statistics) on every process: each process's forward passes
        update its own copy (`wrap` does not send them at every step)."""
        if self.several:
            for buffer in model.buffers():
                self._collective(dist.broadcast, buffer, src=0)

    def check_identical(self, model: nn.Module, problem: str = DIFFERENT_WEIGHTS) -> None:
        """Raise StudioError with `problem` unless every process holds the same weights and buffers, bit for bit."""
        if self.several:
            self.check_same(weights_digest(model), problem)

    def check_same(self, value, problem: str) -> None:
        """Raise StudioError with `problem` (its {rank} filled in) when a process's `value` differs from
        process 0's."""
        if not self.several:
            return
        everyone = self.gather_objects(value)
        differ = [rank for rank, other in enumerate(everyone) if other != everyone[0]]
        if differ:
            raise StudioError(problem.format(rank=differ[0]))

    def agreeing(self, on_batch: Callable | None) -> Callable | None:
        """`on_batch`, after which every process learns whether any of them was cancelled: all then raise
        TrainingCancelled at the same batch."""
        if not self.several:
            return on_batch

        def agreed(progress) -> None:
            cancelled = False
            try:
                if on_batch:
                    on_batch(progress)
            except TrainingCancelled:
                cancelled = True
            if self.any(cancelled):
                raise TrainingCancelled

        return agreed

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Collectives that others run (DistributedDataParallel's) fail as ProcessLost."""
        try:
            yield
        except (RuntimeError, dist.DistError) as exc:
            if self.several and collective_failure(exc):
                raise ProcessLost(lost_text(exc)) from exc
            raise

    def _collective(self, operation, *args, **kwargs) -> None:
        try:
            operation(*args, **kwargs)
        except (RuntimeError, dist.DistError) as exc:
            raise ProcessLost(lost_text(exc)) from exc


class EveryNth(Sampler):
    """Every `size`-th index from `rank`: one process's share of an evaluation split, no picture twice."""

    def __init__(self, count: int, rank: int, size: int):
        self.indices = range(rank, count, size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


SINGLE = World()


def start(requested_device: str = "auto") -> World:
    """This process's place among those torchrun started, its process group joined; SINGLE without torchrun."""
    if not launched_by_torchrun():
        return SINGLE
    rank, size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ConfigError(f"torchrun started more processes on {socket.gethostname()} than it has GPUs ({count}): "
                              f"start at most {count} per machine (--nproc_per_node {count}).", DEVICE)
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"Training on several processes runs on CUDA GPUs or on CPUs, not on {device.type}: choose "
                          "the device cuda or cpu.", DEVICE)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_seconds())
    try:
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
        control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    except (RuntimeError, ValueError, dist.DistError) as exc:
        raise ProcessLost(f"The processes could not meet ({str(exc).splitlines()[0]}). Check that every machine "
                          "runs the same torchrun command with the same --rdzv-endpoint (or --master-addr and "
                          "--master-port), and that this port is open between them.") from exc
    return World(rank, size, local_rank, backend, device, control)


def finish(world: World) -> None:
    if world.joined and dist.is_initialized():
        dist.destroy_process_group()


def device_text(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def weights_digest(model: nn.Module) -> str:
    """A digest of every weight and buffer, bit for bit."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def collective_failure(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed (gloo's and NCCL's errors are RuntimeErrors), not a bug."""
    text = str(exc)
    return isinstance(exc, dist.DistError) or any(mark in text for mark in (
        "gloo", "NCCL", "ProcessGroup", "Connection reset", "Connection closed", "Timed out"))


def lost_text(exc: BaseException) -> str:
    """What a failed collective says, as advice: another process died, hung or cannot be reached."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(" This is typically caused")[0]  # gloo's source file, advice
    if "Timed out" in first or "timeout" in first.lower():
        why = (f"another process did not answer within {timeout_seconds():g} s (it hangs, or its machine is cut off; "
               f"{TIMEOUT_ENV} sets how long to wait)")
    else:
        why = "another process of the run stopped (it died, was killed or failed: its own messages say why)"
    return f"{why}. {first[:300]}"
