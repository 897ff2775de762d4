"""Where and how a run trains, decided once: its device, precision and memory format (a core.device.Compute), and
the processes it trains on (a core.distributed.World). The strategy offers the loop what it needs from them: the
model wrapped for DistributedDataParallel, each loader's sampler, the per-process batch, the reductions and gathers,
the agreement on a cancel, the buffer sync, the identical-weights check and the run's placement.

A plain run gets the single-process strategy, whose every collective is a no-op. With torchrun's processes the
recipe's batch is the global batch: each process trains on its share of it and DistributedDataParallel averages the
gradients; every process evaluates its share of the pictures and the results are gathered back in the data set's
order, so every process takes the same decisions (the best epoch, divergence, a cancel) at the same batch.
"""
from __future__ import annotations

import inspect
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from core.device import Compute, pick_device
from core.distributed import SINGLE, EveryNth, World, device_text, weights_digest
from core.errors import DEVICE, ConfigError, TrainingCancelled
from core.presets import TUTORIAL_PREPROCESSING, Preprocessing
from core.results import OnBatch, Placement

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

Progress = Callable[[str, int, int], None]  # (phase, batch, batches): progress within one pass


@dataclass(frozen=True)
class Strategy:
    """Where and how one run trains: decided once (`decide`), then asked by the Trainer and its loop."""

    compute: Compute
    world: World = SINGLE

    @classmethod
    def decide(cls, requested_device: str, fast: bool, world: World = SINGLE,
               preprocessing: Preprocessing = TUTORIAL_PREPROCESSING) -> Strategy:
        """The device asked for (core.device.pick_device), or with torchrun this process's own; on the fast paths
        with mixed precision where it pays and channels-last, else as the tutorial runs; pictures normalised as
        the backbone's `preprocessing` says."""
        device = pick_device(requested_device)
        if world.joined:
            if device.type != world.device.type:
                raise ConfigError(f"The processes were started for {world.device.type}; a run cannot train on "
                                  f"{requested_device} among them.", DEVICE)
            device = world.device
        mean, std = preprocessing.mean, preprocessing.std
        return cls(Compute.fastest(device, mean, std) if fast else Compute(device, mean=mean, std=std), world)

    @property
    def device(self) -> torch.device:
        return self.compute.device

    @property
    def processes(self) -> int:
        return self.world.size

    def per_process_batch(self, batch_size: int) -> int:
        """The recipe's batch is the global batch: each process trains on an equal share of it."""
        size = self.world.size
        if batch_size % size:
            raise ConfigError(f"The batch size {batch_size} is the batch of all {size} processes together, and it "
                              f"cannot be split evenly between them. Choose a batch size that is a multiple of {size} "
                              f"(for example {size * -(-batch_size // size)}), or start a number of processes that "
                              "divides it.")
        return batch_size // size

    def seed_process(self, seed: int | None) -> None:
        """Each process but the first draws its own crops, flips and dropout: seed + SEED_STRIDE x rank."""
        if seed is not None and self.world.rank:
            torch.manual_seed(seed + SEED_STRIDE * self.world.rank)

    def placement(self, batch_size: int) -> Placement:
        """Where each process trains: gathered from all of them."""
        everyone = self.world.gather_objects((socket.gethostname(), device_text(self.device)))
        hosts, devices = [host for host, _ in everyone], [text for _, text in everyone]
        if not self.world.joined:
            return Placement(hosts, devices)
        share, size = self.per_process_batch(batch_size), self.world.size
        scaling = (f"not scaled: the batch of {batch_size} is the global batch ({share} per process x {size} "
                   "processes), DistributedDataParallel averages the gradients over it, and so the recipe's learning "
                   "rate applies as it is" if size > 1 else "not scaled: one process trains the whole batch")
        return Placement(hosts, devices, self.world.backend, share, scaling)

    # ------------------------------------------------------------ the model and the data

    def wrap(self, model: nn.Module) -> nn.Module:
        """What runs the training steps: `model` itself, or with several processes wrapped by
        DistributedDataParallel, which averages the gradients in the backward pass."""
        if not self.world.several:
            return model  # nothing to average; on one H200 the wrapper alone cost 20-30% of an epoch
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are not sent before each forward pass: process 0's evolve from its own batches either way, and
        # sync_buffers gives them to every process after each epoch, one collective instead of one per step.
        return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True,
                                       **{NO_BUFFERS_PER_STEP: False})

    def sampler(self, dataset: Dataset, shuffled: bool, seed: int | None) -> Sampler | None:
        """This process's share of `dataset`, for its loader: None alone (the loader's own order); with several
        processes, the shuffled training pictures as DistributedSampler deals them (reshuffled each epoch with
        `set_epoch`, every process the same number of batches), or every `size`-th picture, whose results
        `gather_in_order` puts back together."""
        world = self.world
        if not world.several:
            return None
        if shuffled:
            return DistributedSampler(dataset, world.size, world.rank, shuffle=True, seed=seed or 0)
        return EveryNth(len(dataset), world.rank, world.size)

    def batches(self, loader: DataLoader, phase: str, progress: Progress | None) -> Iterator:
        """The loader's batches, each reported to `progress` once done (`reported`)."""
        return reported(loader, self.most_batches(loader), phase, progress)

    def share(self, count: int) -> list[int]:
        """This process's share of `count` pictures that are not shuffled (their `sampler`'s), in its order."""
        sampler = self.sampler(range(count), False, None)
        return list(range(count)) if sampler is None else list(sampler)

    def most_batches(self, loader: DataLoader) -> int:
        """The batches of the largest share of `loader`'s pictures."""
        if not isinstance(loader.sampler, EveryNth):
            return len(loader)
        largest = -(-len(loader.dataset) // self.world.size)
        return -(-largest // loader.batch_size)

    # ------------------------------------------------------------ reductions and agreement between the processes

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over the processes of `value` (on this process's device)."""
        return self.world.sum(value)

    def gather_in_order(self, rows: torch.Tensor, total: int) -> torch.Tensor:
        """The rows of every process's share of an unshuffled loader (`sampler`), back in the data set's order."""
        return self.world.gather_in_order(rows, total)

    def guard(self):
        """Collectives that others run (DistributedDataParallel's, in the backward pass) fail as ProcessLost."""
        return self.world.guard()

    def agreeing(self, on_batch: OnBatch | None) -> OnBatch | None:
        """`on_batch`, after which every process learns whether any of them was cancelled: all then raise
        TrainingCancelled at the same batch."""
        if not self.world.several:
            return on_batch

        def agreed(progress) -> None:
            cancelled = False
            try:
                if on_batch:
                    on_batch(progress)
            except TrainingCancelled:
                cancelled = True
            if self.world.any(cancelled):
                raise TrainingCancelled

        return agreed

    def share_state(self, model: nn.Module) -> None:
        """Process 0's weights and buffers (on the CPU) on every process: all start from the same model."""
        self.world.broadcast_tensors(model.state_dict().values(), control=True)

    def sync_buffers(self, model: nn.Module) -> None:
        """Process 0's buffers (BatchNorm's running statistics) on every process: each process's forward passes
        update its own copy (`wrap` does not send them at every step)."""
        self.world.broadcast_tensors(model.buffers())

    def check_identical(self, model: nn.Module, problem: str = DIFFERENT_WEIGHTS) -> None:
        """Raise StudioError with `problem` unless every process holds the same weights and buffers, bit for bit."""
        if self.world.several:
            self.world.check_same(weights_digest(model), problem)


def reported(batches: Iterable, total: int, phase: str, progress: Progress | None) -> Iterator:
    """`batches`, each reported to `progress` once done. A process whose share has fewer than `total` (the largest
    share's) reports the missing ones too, at the end: every process reports, and so agrees on a cancel, as often."""
    done = 0
    for done, item in enumerate(batches, start=1):
        yield item
        if progress:
            progress(phase, done, total)
    for extra in range(done + 1, total + 1):
        if progress:
            progress(phase, extra, total)
