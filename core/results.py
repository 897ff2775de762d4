"""What a run gives back, as plain records: its progress batch by batch, its epochs, its predictions, where it trained
(Placement), whether its steps ran compiled (Compilation), and the whole result (TrainResult). Saved runs
(core.runs) are read back into these; nothing here trains.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from torch import nn

from core.config import TrainConfig
from core.models import BuiltModel
from core.presets import TUTORIAL_PREPROCESSING, Preprocessing


@dataclass(frozen=True)
class BatchProgress:
    epoch: int  # 1-based; 0 in the "features" phase, before the first epoch
    epochs: int
    phase: str  # "train" or "val"; "features" while a frozen backbone's features are computed, before epoch 1
    batch: int  # 1-based
    batches: int


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    lr: float  # the highest layer group's rate at the epoch's start
    phase: str = ""  # the recipe's phase (core.recipes.Phase); "" in runs saved before recipes had phases
    rates: dict[str, float] | None = None  # each layer group's rate at the epoch's start; None in runs saved before


@dataclass(frozen=True)
class PhaseRecord:
    """What one phase of a run's recipe did: what trained, for how many epochs (0: a probe fitted to convergence),
    with which optimiser and schedule, at which peak rate per layer group; `outcome` in words (a probe's)."""

    name: str
    trains: str
    epochs: int
    optimizer: str
    schedule: str
    rates: dict[str, float]
    outcome: str = ""


@dataclass
class EvalResult:
    loss: float
    acc: float
    predictions: list[int]
    labels: list[int]


OnBatch = Callable[[BatchProgress], None]
OnEpoch = Callable[[EpochStats], None]


@dataclass(frozen=True)
class Callbacks:
    """What a run reports as it goes: each batch (a callback may raise TrainingCancelled) and each finished epoch."""

    on_batch: OnBatch | None = None
    on_epoch: OnEpoch | None = None


NO_CALLBACKS = Callbacks()


@dataclass
class Compilation:
    """Whether a run's training steps ran compiled, and why."""

    used: bool
    reason: str
    seconds: float = 0.0  # wall time of the training steps that compiled (the first of each batch shape)
    failure: str | None = None  # when compiling failed: the error; training went on eager

    @classmethod
    def from_dict(cls, data: dict) -> Compilation:
        if not isinstance(data, dict):
            raise TypeError("compilation must be an object")
        values = {"used": data.get("used"), "reason": data.get("reason"), "seconds": data.get("seconds", 0.0),
                  "failure": data.get("failure")}
        if not isinstance(values["used"], bool) or not isinstance(values["reason"], str):
            raise TypeError("compilation must say whether it was used, and why")
        if not isinstance(values["seconds"], (int, float)) or isinstance(values["seconds"], bool):
            raise TypeError("compilation seconds must be a number")
        if values["failure"] is not None and not isinstance(values["failure"], str):
            raise TypeError("compilation failure must be text")
        return cls(**values)

    @property
    def word(self) -> str:
        """In a word: "yes", "no", or "failed" (it trained eager)."""
        return "failed" if self.failure else "yes" if self.used else "no"

    def describe(self) -> str:
        """In one line, for tables and messages."""
        if self.failure:
            return f"no: compiling failed ({self.failure}), so it trained eager"
        if self.used:
            return f"yes ({self.reason}; compiling steps {self.seconds:.1f} s)"
        return f"no ({self.reason})"


@dataclass(frozen=True)
class Placement:
    """Where and how a run was trained: one process, or several started by torchrun."""

    hosts: list[str]  # one per process, in rank order
    devices: list[str]  # one per process: "cpu", "cuda:0 (NVIDIA H200)"
    backend: str | None = None  # "gloo" or "nccl"; None for a process that torchrun did not start
    per_process_batch: int | None = None  # the recipe's (global) batch split over the processes
    lr_scaling: str = ""  # how the learning rate was scaled for the global batch, or why it was not
    interruption: str | None = None  # why training stopped early when a process was lost
    pictures: str = ""  # how the pictures were loaded (in memory, from disk, as cached features); "" in older runs

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
        if self.pictures:
            lines.append(f"pictures: {self.pictures}")
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


# Per picture, in backbone forward passes: how the kinds of work relate when one of them is not measured yet.
FORWARD_PASSES = {"forward": 1.0, "train-frozen": 1.0, "train-backbone": 3.0}


@dataclass
class ScenarioPlan:
    """A scenario's batches: "features" once, "train" and "val" per epoch; their pictures and kinds of work."""

    scenario: str
    epochs: int
    batches: dict[str, int]
    pictures: dict[str, int]  # pictures that the phase's batches go through (per epoch for train and val)
    kinds: dict[str, str]
    head_epochs: int = 0  # the first epochs, in which the head alone trains on cached features (its train and val)

    @property
    def total_batches(self) -> int:
        return self.batches["features"] + self.epochs * (self.batches["train"] + self.batches["val"])


@dataclass
class TrainResult:
    config: TrainConfig
    built: BuiltModel
    class_names: list[str]
    device: str
    history: list[EpochStats] = field(default_factory=list)
    status: str = "completed"  # or "cancelled", or "diverged" (the loss became NaN or infinite)
    best_epoch: int | None = None
    best_val_acc: float = 0.0
    best_eval: EvalResult | None = None  # validation predictions of the restored (best) weights
    seconds: float = 0.0
    test_eval: EvalResult | None = None  # test predictions of the restored weights, when the data set has test/
    compilation: Compilation | None = None  # whether the training steps ran compiled, and why
    placement: Placement | None = None  # where it trained: the host, device and processes
    phases: list[PhaseRecord] = field(default_factory=list)  # the recipe's phases as they ran
    preprocessing: Preprocessing = TUTORIAL_PREPROCESSING  # the backbone's, as the run's pictures went through it

    @property
    def model(self) -> nn.Module:
        return self.built.model

    @property
    def final(self) -> EpochStats | None:
        return self.history[-1] if self.history else None
