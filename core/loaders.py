"""Every DataLoader a run trains or evaluates with is built here, once, with its sampler: pictures read from disk as
the tutorial reads them, pictures decoded once into memory (core.decoded), and a frozen backbone's cached features
(core.feature_cache).

Who trains on several processes gives each loader its share of the data as a sampler (`LoaderSettings.share`,
core.strategy's); nothing here knows about processes, and nothing rebuilds a loader once built.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.data import DatasetScan, ImageListDataset
from core.decoded import InMemoryData, decoded_bytes
from core.errors import ConfigError
from core.feature_cache import CachedFeatures, RandomView
from core.presets import TUTORIAL_PREPROCESSING, Preprocessing

MEMORY_BUDGET_ENV = "STUDIO_MEMORY_BUDGET_MB"  # the decoded pictures' budget, in MiB; above it, pictures from disk
AVAILABLE_SHARE = 0.5  # by default the decoded pictures may take this share of the memory available at the start
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# (dataset, shuffled, seed) -> the sampler of this process's share of `dataset`; None: the loader's own order
Share = Callable[[Dataset, bool, int | None], Sampler | None]


def whole(_dataset: Dataset, _shuffled: bool, _seed: int | None) -> None:
    """One process: every picture, in the loader's own order."""
    return None


@dataclass(frozen=True)
class LoaderSettings:
    batch_size: int  # this process's
    workers: int | None = None  # loader processes; None: default_workers() for pictures read from disk, else none
    seed: int | None = None  # the training order (and its workers' seeds)
    shuffle: bool = True  # the training pictures, in a new order every epoch
    share: Share = whole


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # where it comes from, in words

    def text(self) -> str:
        return f"{self.bytes / 2**30:.1f} GiB ({self.source})"


def memory_budget() -> MemoryBudget:
    """What decoded pictures may take in memory: $STUDIO_MEMORY_BUDGET_MB, or AVAILABLE_SHARE of the memory that is
    available now."""
    text = os.environ.get(MEMORY_BUDGET_ENV)
    if not text:
        available = psutil.virtual_memory().available
        return MemoryBudget(int(available * AVAILABLE_SHARE), f"{AVAILABLE_SHARE:.0%} of the "
                                                              f"{available / 2**30:.1f} GiB available")
    try:
        budget = float(text)
    except ValueError:
        budget = -1.0
    if not budget >= 0:
        raise ConfigError(f"{MEMORY_BUDGET_ENV} must be a number of MiB, 0 or more (got {text!r}).")
    return MemoryBudget(int(budget * 2**20), f"{MEMORY_BUDGET_ENV}")


def ignore_stop_signals(_worker: int) -> None:
    """A loader worker leaves Ctrl-C, SIGTERM and SIGHUP to the main process, which finishes the batch and saves the
    run: a signal sent to the whole process group (a terminal, `timeout`, a scheduler's cancel) must not kill the
    workers that batch still needs (PyTorch's own SIGTERM handler would). A worker still ends when the main process
    shuts it down or dies."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def usable_workers(workers: int) -> int:
    """The loader processes that may be started from here: those asked for on the main thread, as the command line
    and torchrun run; none on any other, as the dashboard's pages and jobs run, on threads of its server. There a
    fork copies the locks that the other threads hold at that moment (a child waited for good), and a fresh process
    (spawn, forkserver) imports the page's script again as its __main__."""
    return workers if threading.current_thread() is threading.main_thread() else 0


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, workers: int = 0,
                seed: int | None = None, sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader whose random numbers (its order, and its workers' seeds) follow `seed`; with a `sampler`, in
    the sampler's order, its workers seeded from the process's own random numbers (each process's differ)."""
    workers = usable_workers(workers)
    processes = {"num_workers": workers, "persistent_workers": workers > 0,
                 "worker_init_fn": ignore_stop_signals if workers > 0 else None}
    if sampler is not None:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **processes)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, **processes)


def split_loaders(datasets: dict[str, Dataset], settings: LoaderSettings, workers: int) -> dict[str, DataLoader]:
    """A loader per split: "train" shuffled (unless not `settings.shuffle`) in the seed's order, the others in
    theirs."""
    loaders = {}
    for split, dataset in datasets.items():
        shuffled = settings.shuffle and split == "train"
        seed = settings.seed if split == "train" else None
        loaders[split] = make_loader(dataset, settings.batch_size, shuffled, workers, seed,
                                     settings.share(dataset, shuffled, settings.seed))
    return loaders


def disk_loaders(scan: DatasetScan, settings: LoaderSettings, preprocessing: Preprocessing = TUTORIAL_PREPROCESSING
                 ) -> dict[str, DataLoader]:
    """The tutorial's loaders: every picture read from disk and transformed at every access ("test" too when the
    data set has it), with the backbone's preprocessing (the tutorial's by default)."""
    train, evaluation = preprocessing.train(), preprocessing.eval()
    datasets = {"train": ImageListDataset(scan.samples["train"], train),
                **{split: ImageListDataset(scan.samples[split], evaluation) for split in scan.evaluation_splits}}
    return split_loaders(datasets, settings, default_workers() if settings.workers is None else settings.workers)


def decoded_loaders(scan: DatasetScan, settings: LoaderSettings, device: torch.device,
                    preprocessing: Preprocessing = TUTORIAL_PREPROCESSING) -> tuple[dict[str, DataLoader], str]:
    """Loaders of pictures decoded once, or, when they would take more than the memory budget, read from disk; and
    which it is, in words, for the run to state."""
    needed, budget = decoded_bytes(scan, preprocessing), memory_budget()
    if needed > budget.bytes:
        return disk_loaders(scan, settings, preprocessing), (f"read from disk every epoch: decoded they would take "
                                              f"{needed / 2**30:.1f} GiB, over the budget of {budget.text()}")
    workers = settings.workers or 0  # the pictures are ready: loader processes would only take cores from the model
    storage = device if device.type == "cuda" and workers == 0 else torch.device("cpu")
    data = InMemoryData(scan, storage, preprocessing)
    return (split_loaders({"train": data.train, **data.evaluation}, settings, workers),
            f"decoded once into memory: {needed / 2**30:.1f} GiB, within the budget of {budget.text()}")


def feature_loaders(features: CachedFeatures, settings: LoaderSettings) -> dict[str, DataLoader]:
    """Loaders of a frozen backbone's cached features: one random view of each training picture at every access."""
    return split_loaders({"train": RandomView(features.train), **features.evaluation}, settings, 0)
