"""Where the work runs and in what precision: the device (picked here and nowhere else), mixed precision,
channels-last, and batches made ready for it (Compute)."""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import functional as F

from core.errors import DEVICE, ConfigError
from core.presets import IMAGENET_MEAN, IMAGENET_STD


def pick_device(requested: str = "auto") -> torch.device:
    """For "auto": CUDA, then Apple MPS, then CPU. Otherwise the device asked for (cpu, cuda, cuda:N or mps),
    if this machine has it."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(requested, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", requested):
        raise ConfigError(f"Unknown device {requested!r}; choose {_accepted_devices()}.", DEVICE)
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but this machine has no usable CUDA GPU; choose the device auto or cpu.",
                          DEVICE)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(f"{requested} was asked for but this machine has only {count} CUDA GPU"
                          f"{'s' if count != 1 else ''}; choose {_accepted_devices()}.", DEVICE)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("MPS was asked for but this machine has no Apple GPU; choose the device auto or cpu.", DEVICE)
    return device


def _accepted_devices() -> str:
    """The devices this machine can run on, in words: what pick_device accepts here."""
    accepted = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        accepted += ["cuda", "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"]
    if torch.backends.mps.is_available():
        accepted.append("mps")
    return ", ".join(accepted[:-1]) + " or " + accepted[-1]


@contextlib.contextmanager
def one_cpu_thread(applies: bool = True):
    """While it lasts (when `applies`), torch's CPU work runs on one thread: for a head alone on cached features,
    matrices so small that a second thread only costs. On a thread other than the main one (a dashboard job) each
    of its tiny operations took twice as long with two threads (docs/performance.md). The setting is the process's:
    it is restored after."""
    before = torch.get_num_threads()
    if applies:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if applies:
            torch.set_num_threads(before)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA; float32 elsewhere (bfloat16 autocast made CPU training many times slower)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def to_input(batch: torch.Tensor, device: torch.device, channels_last: bool = False,
             mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """A batch on `device`, ready for the network: uint8 pictures get ToTensor's scaling and Normalize."""
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        batch = F.normalize(batch.float().div_(255), list(mean), list(std), inplace=True)
    if channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def forward_batch_size(device: torch.device) -> int:
    """Pictures per batch for forward passes alone (features, outputs): it changes no result (BatchNorm is in eval
    mode), only the speed."""
    return 64 if device.type == "cuda" else 4  # on CPU small batches stay in cache: measured faster


@dataclass(frozen=True)
class Compute:
    """Where forward passes run and how: the device, the mixed-precision dtype (None: float32), whether batches
    are channels-last, and the mean and std that uint8 pictures are normalised with (the backbone's). A run's is
    decided once (core.strategy); what evaluates, caches features or looks at pictures is given one."""

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def fastest(cls, device: torch.device, mean: tuple[float, ...] = IMAGENET_MEAN,
                std: tuple[float, ...] = IMAGENET_STD) -> Compute:
        """Mixed precision where it pays (amp_dtype), channels-last: the fast paths' way."""
        return cls(device, amp_dtype(device), True, mean, std)

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        return to_input(batch, self.device, self.channels_last, self.mean, self.std)

    def autocast(self):
        return autocast(self.device, self.dtype)

    def place(self, model: nn.Module) -> nn.Module:
        """`model` on the device, in the memory format its batches come in."""
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    @torch.no_grad()
    def outputs(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, object]]
                ) -> Iterator[tuple[torch.Tensor, object]]:
        """The one forward loop: `model`'s outputs (float32) batch by batch, each with what came with its inputs (the
        labels, the file names). Evaluation, feature caching and the features of a run's pictures all read it."""
        for inputs, extra in batches:
            with self.autocast():
                outputs = model(self.inputs(inputs))
            yield outputs.float(), extra
