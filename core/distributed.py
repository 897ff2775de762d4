"""Several processes, GPUs or machines: torchrun's environment, the process group, and the raw collectives.

Started by torchrun (`torchrun --nproc_per_node N -m core train ...`), each process reads its rank from the
environment torchrun sets and joins the process group: NCCL between CUDA GPUs, gloo on CPUs. A `World` is only the
ranks and the collectives between them; what a run does with them (its share of the data, the wrapped model, the
agreement on a cancel) is core.strategy's, and nothing below it sees a World. Only process 0 prints and saves.

A `World` of one process (`SINGLE`, or torchrun's world of one) makes every collective here a no-op.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from core.device import pick_device
from core.errors import DEVICE, ConfigError, ProcessLost, StudioError
from core.results import Placement

TIMEOUT_ENV = "STUDIO_DIST_TIMEOUT"
# How long a process waits for the others at a collective before it gives up with ProcessLost. A process that dies
# is noticed at once (its connections close); this bounds the wait for one that hangs or is cut off.
DEFAULT_TIMEOUT_S = 300.0

__all__ = ["EveryNth", "Placement", "ProcessLost", "SINGLE", "World", "finish", "start", "weights_digest"]


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


@dataclass(frozen=True)
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

    def broadcast_tensors(self, tensors: Iterable[torch.Tensor], control: bool = False) -> None:
        """Process 0's values of `tensors`, in place on every process: on the training backend (NCCL between GPUs),
        or with `control` on the gloo group (tensors on the CPU)."""
        if self.several:
            for tensor in tensors:
                self._collective(dist.broadcast, tensor, src=0, group=self.control if control else None)

    def wait_for_all(self, seconds: float = 0) -> None:
        """Wait until every process gets here: at most `seconds` (or the timeout, if longer). A process that died or
        hangs is named."""
        if self.several:
            timeout = datetime.timedelta(seconds=max(seconds, timeout_seconds()))
            self._collective(dist.monitored_barrier, group=self.control, timeout=timeout, wait_all_ranks=True)

    def check_same(self, value, problem: str) -> None:
        """Raise StudioError with `problem` (its {rank} filled in) when a process's `value` differs from
        process 0's."""
        if not self.several:
            return
        everyone = self.gather_objects(value)
        differ = [rank for rank, other in enumerate(everyone) if other != everyone[0]]
        if differ:
            raise StudioError(problem.format(rank=differ[0]))

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
