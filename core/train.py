"""Training: the tutorial's recipe as data, its loop as plain functions, with callbacks and cancellation.

By default the loop runs on the fast paths of core.fast (pictures decoded once, cached features for a
truly frozen backbone, evaluation with BatchNorm folded into the convolutions), channels-last, on CUDA with mixed
precision (core.device), and compiled where that pays (core.compiling); `fast=False` runs the tutorial's loop.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from core import compiling, fast
from core.data import DatasetScan, make_loaders
from core.device import amp_dtype, autocast, one_cpu_thread, pick_device, to_input
from core.distributed import SINGLE, Placement, ProcessLost, World
from core.errors import ConfigError, TrainingCancelled
from core.models import BuiltModel, build_model, get_backbone, get_scenario, set_training_mode
from core.recipes import Recipe

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

    @classmethod
    def from_settings(cls, settings: Mapping[str, object], **chosen) -> TrainConfig:
        """The one place where a caller's settings become a run's: the command line's arguments, a page's form or
        a job's request, by name (other names are ignored, a name not given keeps the tutorial's value), then
        `chosen` (the scenario, the seed...). Checked as any TrainConfig is."""
        names = {item.name for item in fields(cls)}
        return cls(**{name: value for name, value in {**settings, **chosen}.items() if name in names})


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
    placement: Placement | None = None  # where it trained: the host, device and processes

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
                    scaler: torch.amp.GradScaler | None = None, steps: compiling.TrainingSteps | None = None,
                    world: World = SINGLE) -> tuple[float, float]:
    """One pass over the training loader (this process's share of it). `steps` runs each forward and backward
    pass (compiled, where it is; through DistributedDataParallel with several processes). The loss and accuracy
    are over the pictures of every process."""
    set_training_mode(model, built.backbone, built.scenario)
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    steps = steps or compiling.TrainingSteps(model, compiling.Compilation(False, "not asked for"))
    total_loss = torch.zeros((), device=device)
    corrects = torch.zeros((), dtype=torch.long, device=device)
    seen = torch.zeros((), dtype=torch.long, device=device)

    def forward_backward(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            outputs = network(inputs)
            loss = criterion(outputs, labels)
        scaler.scale(loss).backward()
        return outputs, loss

    for inputs, labels in world.batches(loader, "train", progress):
        inputs, labels = to_input(inputs, device, channels_last), labels.to(device, non_blocking=True)
        with world.guard():  # DistributedDataParallel's own collectives, in the backward pass
            outputs, loss = steps.run(forward_backward, inputs, labels)
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.detach() * inputs.size(0)
        corrects += (outputs.argmax(1) == labels).sum()
        seen += inputs.size(0)
    totals = world.sum(torch.stack([total_loss, corrects.to(total_loss.dtype), seen.to(total_loss.dtype)]))
    loss_sum, correct, count = totals.tolist()
    return loss_sum / count, correct / count


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, progress: fast.Progress | None = None,
             channels_last: bool = False, dtype: torch.dtype | None = None, world: World = SINGLE) -> EvalResult:
    """The tutorial's loss (cross-entropy) and accuracy on every picture of `loader`'s data set, with each picture's
    prediction in the data set's order. With several processes each evaluates its share and the results are
    gathered: every process gets the same result."""
    model.eval()
    losses, predictions, labels_seen = [], [], []
    for inputs, labels in world.batches(loader, "val", progress):
        inputs, labels = to_input(inputs, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(device, dtype):
            outputs = model(inputs)
        losses.append(nn.functional.cross_entropy(outputs.float(), labels, reduction="none"))
        predictions.append(outputs.argmax(1))
        labels_seen.append(labels)
    count = len(loader.dataset)
    rows = torch.stack([torch.cat(losses), torch.cat(predictions).float(), torch.cat(labels_seen).float()],
                       dim=1) if losses else torch.zeros((0, 3), device=device)
    rows = world.gather_in_order(rows, count).cpu().double()
    predicted, actual = rows[:, 1].long().tolist(), rows[:, 2].long().tolist()
    acc = sum(p == a for p, a in zip(predicted, actual)) / len(actual)
    return EvalResult(rows[:, 0].sum().item() / len(actual), acc, predicted, actual)


def fit(result: TrainResult, model: nn.Module, loaders, device: torch.device, *,
        on_batch: OnBatch | None = None, on_epoch: OnEpoch | None = None, world: World = SINGLE) -> TrainResult:
    """The tutorial's train_model: the recipe's loss, optimiser and schedule (core.recipes), best validation
    accuracy kept and restored at the end.

    `model` is what trains: the whole network, or only its head on cached features. On the fast path it is
    evaluated with its BatchNorm folded into its convolutions (fast.FoldedEvaluation), and its training steps run
    compiled where core.compiling says so. With several processes (`world`), `loaders` are this process's shares,
    the steps run through DistributedDataParallel, and process 0's BatchNorm statistics are shared after each
    epoch; a process lost on the way stops the run, which keeps its best epoch and is marked "cancelled".
    """
    config = result.config
    channels_last, dtype = config.fast, amp_dtype(device) if config.fast else None
    result.compilation = compiling.plan(config.compile, fast=config.fast, train_backbone=result.built.scenario
                                        .train_backbone, device=device, steps=config.epochs * len(loaders["train"]))
    steps = compiling.TrainingSteps(world.wrap(model), result.compilation)
    judge = evaluation_model(config, model)
    recipe = Recipe.of(config)
    criterion = recipe.loss()
    optimizer = recipe.optimizer([p for p in model.parameters() if p.requires_grad])
    scheduler = recipe.schedule(optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    best_state = _copy_state(model)
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            progress = batch_reporter(on_batch, epoch, config.epochs)
            if isinstance(loaders["train"].sampler, DistributedSampler):
                loaders["train"].sampler.set_epoch(epoch)
            train_loss, train_acc = train_one_epoch(
                model, loaders["train"], built=result.built, criterion=criterion, optimizer=optimizer, device=device,
                progress=progress, channels_last=channels_last, dtype=dtype, scaler=scaler, steps=steps, world=world)
            scheduler.step()
            world.sync_buffers(model)
            val = evaluate(judge(), loaders["val"], device, progress=progress, channels_last=channels_last,
                           dtype=dtype, world=world)
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
    except ProcessLost as lost:
        result.status = "cancelled"
        result.placement = replace(result.placement, interruption=str(lost))
    model.load_state_dict(best_state)
    return result


def evaluation_model(config: TrainConfig, model: nn.Module) -> Callable[[], nn.Module]:
    """What gives the model to evaluate, with its current weights: on the fast path with its BatchNorm folded into
    its convolutions, else (or without BatchNorm, as a head on cached features) the model itself."""
    has_batchnorm = any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in model.modules())
    return fast.FoldedEvaluation(model) if config.fast and has_batchnorm else lambda: model


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def planned_phase_batches(config: TrainConfig, scan: DatasetScan, processes: int = 1) -> dict[str, int]:
    """The batches a full run reports per phase: "features" once (0 unless a frozen backbone's features are
    cached), "train" and "val" in every epoch; with several processes, those of each process's share."""
    count = {split: math.ceil(len(samples) / processes) for split, samples in scan.samples.items()}
    batch = max(1, config.batch_size // processes)
    batches = {"features": 0, **{split: math.ceil(count[split] / batch) for split in ("train", "val")}}
    if config.fast and fast.cacheable(get_scenario(config.scenario)):
        size = fast.feature_batch_size(pick_device(config.device))
        batches["features"] = sum(math.ceil(n / size) * (config.cached_views if split == "train" else 1)
                                  for split, n in count.items())
    return batches


def planned_batches(config: TrainConfig, scan: DatasetScan, processes: int = 1) -> int:
    """How many times a full run calls on_batch: for progress bars."""
    batches = planned_phase_batches(config, scan, processes)
    return batches["features"] + config.epochs * (batches["train"] + batches["val"])


def cache_features(config: TrainConfig, scan: DatasetScan, built: BuiltModel, device: torch.device, *,
                   on_batch: OnBatch | None = None, world: World = SINGLE) -> fast.CachedFeatures:
    """A truly frozen backbone's features of every picture of `scan`: `config.cached_views` augmented views of each
    training picture (drawn with `config.seed`), one of each evaluation picture. With several processes each
    computes those of its share of the pictures, and every process gets them all."""
    loaders = fast.decoded_loaders(scan, fast.feature_batch_size(device), config.workers, config.seed, device,
                                   shuffle=False)
    return fast.extract_features(built, world.shard(loaders, config.seed, shuffle_train=False), config.cached_views,
                                 device, progress=batch_reporter(on_batch, 0, config.epochs), channels_last=True,
                                 dtype=amp_dtype(device), world=world)


def prepare(config: TrainConfig, scan: DatasetScan, built: BuiltModel, device: torch.device, *,
            on_batch: OnBatch | None = None, features: fast.CachedFeatures | None = None,
            world: World = SINGLE) -> tuple[nn.Module, dict]:
    """What trains and its loaders (this process's share of them). Fast: pictures decoded once into memory (unless
    they would take more than fast.MEMORY_BUDGET), and for a truly frozen backbone its features, computed up front
    (or given, already computed for `scan`'s pictures), train the head."""
    batch = world.per_process_batch(config.batch_size)
    model = built.model.to(device)
    if not config.fast:
        return model, world.shard(make_loaders(scan, batch, config.workers, config.seed), config.seed)
    model.to(memory_format=torch.channels_last)
    if not fast.cacheable(built.scenario):
        loaders = fast.decoded_loaders(scan, batch, config.workers, config.seed, device)
        return model, world.shard(loaders, config.seed)
    features = features or cache_features(config, scan, built, device, on_batch=on_batch, world=world)
    return fast.head_of(built)[2], world.shard(fast.feature_loaders(features, batch, config.seed), config.seed)


def train(
    config: TrainConfig,
    scan: DatasetScan,
    weights: str | Path | None = None,
    on_batch: OnBatch | None = None,
    on_epoch: OnEpoch | None = None,
    features: fast.CachedFeatures | None = None,
    world: World = SINGLE,
) -> TrainResult:
    """Build the scenario's model, train it on a checked data set, and return the best weights and history, with
    their predictions on the test split when the data set has one.

    `features`, for a truly frozen backbone on the fast path only, are its features of `scan`'s pictures, computed
    before (an experiment computes them once for all its runs). A callback may raise TrainingCancelled: the run
    then stops, keeps its best epoch so far and is marked "cancelled".

    With several processes (`world`, started by torchrun) every process calls this at once and trains its share;
    they all stop at the same batch when any one's callback cancels, and they all end with the same weights
    (checked). A process lost on the way stops the others: their run keeps its best epoch, marked "cancelled",
    with the reason in `placement.interruption`.
    """
    scan.raise_if_invalid()
    device = world.pick_device(config.device)
    on_batch = world.agreeing(on_batch)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    built = build_model(config.backbone, config.scenario, len(scan.classes), weights)
    world.share_state(built.model)
    world.seed(config.seed)
    result = TrainResult(config=config, built=built, class_names=list(scan.classes), device=str(device),
                         placement=world.placement(device, config.batch_size))
    started = time.perf_counter()
    try:
        model, loaders = prepare(config, scan, built, device, on_batch=on_batch, features=features, world=world)
        with one_cpu_thread(device.type == "cpu" and model is not built.model):  # the head on cached features
            fit(result, model, loaders, device, on_batch=on_batch, on_epoch=on_epoch, world=world)
        if not result.placement.interruption:
            world.check_identical(built.model)
        if "test" in loaders and result.best_epoch is not None and not result.placement.interruption:
            result.test_eval = evaluate(evaluation_model(config, model)(), loaders["test"], device,
                                        channels_last=config.fast, dtype=amp_dtype(device) if config.fast else None,
                                        world=world)
    except TrainingCancelled:  # while caching features, before the first epoch
        result.status = "cancelled"
    except ProcessLost as lost:  # while caching features, or evaluating on test/
        if result.status == "completed" and len(result.history) < config.epochs:
            result.status = "cancelled"
        result.placement = replace(result.placement, interruption=str(lost))
    result.seconds = time.perf_counter() - started
    built.model.eval()
    return result
