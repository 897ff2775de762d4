"""Training: the tutorial's recipe as data, its loop as plain functions, with callbacks and cancellation.

By default the loop runs on the fast paths of core.fast (pictures decoded once, cached features for a
truly frozen backbone, evaluation with BatchNorm folded into the convolutions), channels-last, on CUDA with mixed
precision (core.device), and compiled where that pays (core.compiling); `fast=False` runs the tutorial's loop.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from core import compiling, fast
from core.data import DatasetScan, make_loaders
from core.device import amp_dtype, autocast, pick_device, to_input
from core.errors import ConfigError, TrainingCancelled
from core.models import BuiltModel, build_model, get_backbone, get_scenario, set_training_mode

MAX_LR = 100.0  # far beyond any useful rate; SGD fails outright once lr passes float32's range


@dataclass
class TrainConfig:
    """The recipe. Defaults are the tutorial's."""

    backbone: str = "resnet18"
    scenario: str = "finetune"
    epochs: int = 25
    batch_size: int = 4
    lr: float = 0.001
    momentum: float = 0.9
    step_size: int = 7
    gamma: float = 0.1
    seed: int | None = 0
    device: str = "auto"
    workers: int | None = None  # data-loader processes; None picks one for this machine
    fast: bool = True  # the fast paths of core.fast; False runs the tutorial's loop as it is
    cached_views: int = 3  # frozen: augmented views per training picture whose backbone features are cached
    compile: str = "auto"  # torch.compile of the training steps: "auto" (where it pays), "on" or "off"

    def __post_init__(self) -> None:
        get_backbone(self.backbone)
        get_scenario(self.scenario)
        for name in ("epochs", "batch_size", "step_size", "cached_views"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number (got {value!r}).")
            if value < 1:
                raise ConfigError(f"{name} must be at least 1 (got {value}).")
        for name in ("seed", "workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name} must be a whole number, at least 0 (got {value!r}).")
        for name in ("lr", "momentum", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number (got {value!r}).")
        if not 0 < self.lr <= MAX_LR:
            raise ConfigError(f"lr must be positive and at most {MAX_LR:g} (got {self.lr!r}).")
        if not 0 <= self.momentum < 1 or not 0 < self.gamma <= 1:
            raise ConfigError("momentum must be in [0, 1) and gamma in (0, 1].")
        if self.compile not in compiling.COMPILE_CHOICES:
            raise ConfigError(f"compile must be one of {', '.join(compiling.COMPILE_CHOICES)} (got {self.compile!r}).")

    def to_dict(self) -> dict:
        return asdict(self)


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
    lr: float


@dataclass
class EvalResult:
    loss: float
    acc: float
    predictions: list[int]
    labels: list[int]


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
    compilation: compiling.Compilation | None = None  # whether the training steps ran compiled, and why

    @property
    def model(self) -> nn.Module:
        return self.built.model

    @property
    def final(self) -> EpochStats | None:
        return self.history[-1] if self.history else None


OnBatch = Callable[[BatchProgress], None]
OnEpoch = Callable[[EpochStats], None]


def batch_reporter(on_batch: OnBatch | None, epoch: int, epochs: int) -> fast.Progress:
    """The (phase, batch, batches) callback of one epoch (0: before the first), reported to `on_batch`."""

    def progress(phase: str, batch: int, batches: int) -> None:
        if on_batch:
            on_batch(BatchProgress(epoch, epochs, phase, batch, batches))

    return progress


def train_one_epoch(model: nn.Module, loader, *, built: BuiltModel, criterion, optimizer, device: torch.device,
                    progress: fast.Progress, channels_last: bool = False, dtype: torch.dtype | None = None,
                    scaler: torch.amp.GradScaler | None = None,
                    steps: compiling.TrainingSteps | None = None) -> tuple[float, float]:
    """One pass over the training loader. `steps` runs each forward and backward pass (compiled, where it is)."""
    set_training_mode(model, built.backbone, built.scenario)
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    steps = steps or compiling.TrainingSteps(model, compiling.Compilation(False, "not asked for"))
    total_loss = torch.zeros((), device=device)
    corrects = torch.zeros((), dtype=torch.long, device=device)

    def forward_backward(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            outputs = network(inputs)
            loss = criterion(outputs, labels)
        scaler.scale(loss).backward()
        return outputs, loss

    for batch, (inputs, labels) in enumerate(loader, start=1):
        inputs, labels = to_input(inputs, device, channels_last), labels.to(device, non_blocking=True)
        outputs, loss = steps.run(forward_backward, inputs, labels)
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.detach() * inputs.size(0)
        corrects += (outputs.argmax(1) == labels).sum()
        progress("train", batch, len(loader))
    count = len(loader.dataset)
    return total_loss.item() / count, corrects.item() / count


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion, device: torch.device, *, progress: fast.Progress | None = None,
             channels_last: bool = False, dtype: torch.dtype | None = None) -> EvalResult:
    model.eval()
    total_loss = torch.zeros((), device=device)
    predictions, labels_seen = [], []
    for batch, (inputs, labels) in enumerate(loader, start=1):
        inputs, labels = to_input(inputs, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(device, dtype):
            outputs = model(inputs)
        total_loss += criterion(outputs.float(), labels) * inputs.size(0)
        predictions.append(outputs.argmax(1))
        labels_seen.append(labels)
        if progress:
            progress("val", batch, len(loader))
    predicted = torch.cat(predictions).tolist()
    actual = torch.cat(labels_seen).tolist()
    acc = sum(p == a for p, a in zip(predicted, actual)) / len(actual)
    return EvalResult(total_loss.item() / len(actual), acc, predicted, actual)


def fit(result: TrainResult, model: nn.Module, loaders, device: torch.device, *,
        on_batch: OnBatch | None = None, on_epoch: OnEpoch | None = None) -> TrainResult:
    """The tutorial's train_model: SGD with StepLR, best validation accuracy kept and restored at the end.

    `model` is what trains: the whole network, or only its head on cached features. On the fast path it is
    evaluated with its BatchNorm folded into its convolutions (fast.FoldedEvaluation), and its training steps run
    compiled where core.compiling says so.
    """
    config = result.config
    channels_last, dtype = config.fast, amp_dtype(device) if config.fast else None
    result.compilation = compiling.plan(config.compile, fast=config.fast, train_backbone=result.built.scenario
                                        .train_backbone, device=device, steps=config.epochs * len(loaders["train"]))
    steps = compiling.TrainingSteps(model, result.compilation)
    judge = evaluation_model(config, model)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, momentum=config.momentum
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    best_state = _copy_state(model)
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            progress = batch_reporter(on_batch, epoch, config.epochs)
            train_loss, train_acc = train_one_epoch(
                model, loaders["train"], built=result.built, criterion=criterion, optimizer=optimizer, device=device,
                progress=progress, channels_last=channels_last, dtype=dtype, scaler=scaler, steps=steps)
            scheduler.step()
            val = evaluate(judge(), loaders["val"], criterion, device, progress=progress, channels_last=channels_last,
                           dtype=dtype)
            if not (math.isfinite(train_loss) and math.isfinite(val.loss)):
                result.status = "diverged"  # the weights are NaN or infinite from here on: keep the best so far
                break
            stats = EpochStats(epoch, train_loss, train_acc, val.loss, val.acc, time.perf_counter() - epoch_started, lr)
            result.history.append(stats)
            if val.acc > result.best_val_acc or result.best_epoch is None:
                result.best_val_acc, result.best_epoch, result.best_eval = val.acc, epoch, val
                best_state = _copy_state(model)
            if on_epoch:
                on_epoch(stats)
    except TrainingCancelled:
        result.status = "cancelled"
    model.load_state_dict(best_state)
    return result


def evaluation_model(config: TrainConfig, model: nn.Module) -> Callable[[], nn.Module]:
    """What gives the model to evaluate, with its current weights: on the fast path with its BatchNorm folded into
    its convolutions, else (or without BatchNorm, as a head on cached features) the model itself."""
    has_batchnorm = any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in model.modules())
    return fast.FoldedEvaluation(model) if config.fast and has_batchnorm else lambda: model


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def planned_phase_batches(config: TrainConfig, scan: DatasetScan) -> dict[str, int]:
    """The batches a full run reports per phase: "features" once (0 unless a frozen backbone's features are
    cached), "train" and "val" in every epoch."""
    count = {split: len(samples) for split, samples in scan.samples.items()}
    batches = {"features": 0, **{split: math.ceil(count[split] / config.batch_size) for split in ("train", "val")}}
    if config.fast and fast.cacheable(get_scenario(config.scenario)):
        size = fast.feature_batch_size(pick_device(config.device))
        batches["features"] = sum(math.ceil(n / size) * (config.cached_views if split == "train" else 1)
                                  for split, n in count.items())
    return batches


def planned_batches(config: TrainConfig, scan: DatasetScan) -> int:
    """How many times a full run calls on_batch: for progress bars."""
    batches = planned_phase_batches(config, scan)
    return batches["features"] + config.epochs * (batches["train"] + batches["val"])


def cache_features(config: TrainConfig, scan: DatasetScan, built: BuiltModel, device: torch.device, *,
                   on_batch: OnBatch | None = None) -> fast.CachedFeatures:
    """A truly frozen backbone's features of every picture of `scan`: `config.cached_views` augmented views of each
    training picture (drawn with `config.seed`), one of each evaluation picture."""
    loaders = fast.decoded_loaders(scan, fast.feature_batch_size(device), config.workers, config.seed, device,
                                   shuffle=False)
    return fast.extract_features(built, loaders, config.cached_views, device,
                                 progress=batch_reporter(on_batch, 0, config.epochs), channels_last=True,
                                 dtype=amp_dtype(device))


def prepare(config: TrainConfig, scan: DatasetScan, built: BuiltModel, device: torch.device, *,
            on_batch: OnBatch | None = None, features: fast.CachedFeatures | None = None) -> tuple[nn.Module, dict]:
    """What trains and its loaders. Fast: pictures decoded once into memory (unless they would take more
    than fast.MEMORY_BUDGET), and for a truly frozen backbone its features, computed up front (or given, already
    computed for `scan`'s pictures), train the head."""
    model = built.model.to(device)
    if not config.fast:
        return model, make_loaders(scan, config.batch_size, config.workers, config.seed)
    model.to(memory_format=torch.channels_last)
    if not fast.cacheable(built.scenario):
        return model, fast.decoded_loaders(scan, config.batch_size, config.workers, config.seed, device)
    features = features or cache_features(config, scan, built, device, on_batch=on_batch)
    return fast.head_of(built)[2], fast.feature_loaders(features, config.batch_size, config.seed)


def train(
    config: TrainConfig,
    scan: DatasetScan,
    weights: str | Path | None = None,
    on_batch: OnBatch | None = None,
    on_epoch: OnEpoch | None = None,
    features: fast.CachedFeatures | None = None,
) -> TrainResult:
    """Build the scenario's model, train it on a checked data set, and return the best weights and history, with
    their predictions on the test split when the data set has one.

    `features`, for a truly frozen backbone on the fast path only, are its features of `scan`'s pictures, computed
    before (an experiment computes them once for all its runs). A callback may raise TrainingCancelled: the run
    then stops, keeps its best epoch so far and is marked "cancelled".
    """
    scan.raise_if_invalid()
    device = pick_device(config.device)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    built = build_model(config.backbone, config.scenario, len(scan.classes), weights)
    result = TrainResult(config=config, built=built, class_names=list(scan.classes), device=str(device))
    started = time.perf_counter()
    try:
        model, loaders = prepare(config, scan, built, device, on_batch=on_batch, features=features)
        fit(result, model, loaders, device, on_batch=on_batch, on_epoch=on_epoch)
        if "test" in loaders and result.best_epoch is not None:
            result.test_eval = evaluate(evaluation_model(config, model)(), loaders["test"], nn.CrossEntropyLoss(),
                                        device, channels_last=config.fast,
                                        dtype=amp_dtype(device) if config.fast else None)
    except TrainingCancelled:  # while caching features, before the first epoch
        result.status = "cancelled"
    result.seconds = time.perf_counter() - started
    built.model.eval()
    return result
