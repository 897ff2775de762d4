"""The training loop as plain functions: one forward loop over a loader (evaluation and feature caching read it),
one epoch of training, and `fit`, which runs the recipe's phases (a probe, or epoch by epoch), keeps the best
epoch's weights and restores them at the end. Where the batches go, how the model is wrapped and what the processes
agree on is the strategy's (core.strategy); how the run learns is the recipe's (core.recipes): the loop names neither
a device nor an optimiser.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from core import compiling, folding
from core.config import TrainConfig
from core.device import one_cpu_thread
from core.errors import ProcessLost, TrainingCancelled
from core.models import BuiltModel, copy_state, set_training_mode
from core.recipes import Phase, Recipe, fit_probe
from core.results import (
    NO_CALLBACKS,
    BatchProgress,
    Callbacks,
    EpochStats,
    EvalResult,
    OnBatch,
    PhaseRecord,
    TrainResult,
)
from core.strategy import Progress, Strategy


def batch_reporter(on_batch: OnBatch | None, epoch: int, epochs: int) -> Progress:
    """The (phase, batch, batches) callback of one epoch (0: before the first), reported to `on_batch`."""

    def progress(phase: str, batch: int, batches: int) -> None:
        if on_batch:
            on_batch(BatchProgress(epoch, epochs, phase, batch, batches))

    return progress


def outputs_of(model: nn.Module, loader: DataLoader, strategy: Strategy, phase: str,
               progress: Progress | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """`model`'s outputs (float32) and the labels, batch by batch, on this process's share of `loader`'s pictures."""
    outputs, labels = [], []
    for output, label in strategy.compute.outputs(model, strategy.batches(loader, phase, progress)):
        outputs.append(output)
        labels.append(label.to(strategy.device, non_blocking=True))
    return outputs, labels


def evaluate(model: nn.Module, loader: DataLoader, strategy: Strategy, progress: Progress | None = None) -> EvalResult:
    """The tutorial's loss (cross-entropy) and accuracy on every picture of `loader`'s data set, with each picture's
    prediction in the data set's order. With several processes each evaluates its share and the results are
    gathered: every process gets the same result."""
    model.eval()
    outputs, labels = outputs_of(model, loader, strategy, "val", progress)
    rows = [torch.stack([nn.functional.cross_entropy(output, label, reduction="none"), output.argmax(1).float(),
                         label.float()], dim=1) for output, label in zip(outputs, labels)]
    rows = torch.cat(rows) if rows else torch.zeros((0, 3), device=strategy.device)
    rows = strategy.gather_in_order(rows, len(loader.dataset)).cpu().double()
    predicted, actual = rows[:, 1].long().tolist(), rows[:, 2].long().tolist()
    acc = sum(p == a for p, a in zip(predicted, actual)) / len(actual)
    return EvalResult(rows[:, 0].sum().item() / len(actual), acc, predicted, actual)


@dataclass
class Stage:
    """One phase of the recipe as it trains: what trains (the whole network, or its head alone on cached features),
    its loaders, and the head's parameters (the last of the layer groups)."""

    phase: Phase
    model: nn.Module
    loaders: dict[str, DataLoader]
    head: list[nn.Parameter]
    head_only: bool  # the head alone, on cached features


@dataclass
class Learning:
    """What a phase trains with: the recipe's loss and optimiser, the gradient scaler (float16 only), the steps
    (compiled where they are; through DistributedDataParallel with several processes) and the schedule when it
    steps after every batch."""

    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    steps: compiling.TrainingSteps
    per_batch: torch.optim.lr_scheduler.LRScheduler | None = None
    fixed_statistics: bool = False  # the backbone's BatchNorm layers stay in eval mode (core.models)


def train_one_epoch(model: nn.Module, loader: DataLoader, built: BuiltModel, learning: Learning, strategy: Strategy,
                    progress: Progress, head_only: bool = False) -> tuple[float, float]:
    """One pass over the training loader (this process's share of it); `head_only`: `model` is the head alone, on
    cached features. The loss and accuracy are over the pictures of every process."""
    set_training_mode(model, built.scenario, learning.fixed_statistics, head_only)
    device, optimizer, scaler = strategy.device, learning.optimizer, learning.scaler
    total_loss = torch.zeros((), device=device)
    corrects = torch.zeros((), dtype=torch.long, device=device)
    seen = torch.zeros((), dtype=torch.long, device=device)

    def forward_backward(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor):
        optimizer.zero_grad(set_to_none=True)
        with strategy.compute.autocast():
            outputs = network(inputs)
            loss = learning.criterion(outputs, labels)
        scaler.scale(loss).backward()
        return outputs, loss

    for inputs, labels in strategy.batches(loader, "train", progress):
        inputs, labels = strategy.compute.inputs(inputs), labels.to(device, non_blocking=True)
        with strategy.guard():  # DistributedDataParallel's own collectives, in the backward pass
            outputs, loss = learning.steps.run(forward_backward, inputs, labels)
        scaler.step(optimizer)
        scaler.update()
        if learning.per_batch:
            learning.per_batch.step()
        total_loss += loss.detach() * inputs.size(0)
        corrects += (outputs.argmax(1) == labels).sum()
        seen += inputs.size(0)
    totals = strategy.sum(torch.stack([total_loss, corrects.to(total_loss.dtype), seen.to(total_loss.dtype)]))
    loss_sum, correct, count = totals.tolist()
    return loss_sum / count, correct / count


def fit(result: TrainResult, stages: list[Stage], strategy: Strategy, callbacks: Callbacks = NO_CALLBACKS
        ) -> TrainResult:
    """The tutorial's train_model, phase by phase of the recipe (core.recipes): its loss, optimiser, layer groups and
    schedule, the best validation accuracy kept and restored at the end. Each phase is recorded in
    `result.phases`, each epoch with its phase and its groups' rates.

    A stage's model is what trains: the whole network, or only its head on cached features. On the fast path it is
    evaluated with its BatchNorm folded into its convolutions, and its training steps run compiled where
    core.compiling says so. With several processes its loaders are this process's shares, and process 0's BatchNorm
    statistics are shared after each epoch; a process lost on the way stops the run, which keeps its best epoch and
    is marked "cancelled". The last stage's model holds every other's.
    """
    recipe, keeper = Recipe.of(result.config), stages[-1].model
    best = {"state": copy_state(keeper)}
    done = 0  # epochs of the phases before
    try:
        for stage in stages:
            with one_cpu_thread(strategy.device.type == "cpu" and stage.head_only):
                if stage.phase.probe:
                    result.phases.append(_probe(stage, strategy))
                else:
                    _train_phase(result, stage, recipe, strategy, callbacks, done, keeper, best)
            done += stage.phase.epochs
    except _Diverged:
        pass
    except TrainingCancelled:
        result.status = "cancelled"
    except ProcessLost as lost:
        result.status = "cancelled"
        result.placement = replace(result.placement, interruption=str(lost))
    keeper.load_state_dict(best["state"])
    return result


def _train_phase(result: TrainResult, stage: Stage, recipe: Recipe, strategy: Strategy, callbacks: Callbacks,
                 done: int, keeper: nn.Module, best: dict) -> None:
    """The phase's epochs, after the `done` of the phases before; `best["state"]` is `keeper`'s at the best epoch."""
    config, phase, loaders = result.config, stage.phase, stage.loaders
    compilation = compiling.plan(config.compile, fast=config.fast, train_backbone=not stage.head_only,
                                 device=strategy.device, steps=phase.epochs * len(loaders["train"]))
    result.compilation = compilation
    steps = compiling.TrainingSteps(strategy.wrap(stage.model), compilation)
    judge = evaluation_model(config, stage.model)
    groups = recipe.groups(list(stage.model.parameters()), stage.head, phase)
    optimizer = recipe.optimizer(groups, phase)
    schedule, per_batch = recipe.schedule(optimizer, phase, len(loaders["train"]))
    learning = Learning(recipe.loss(), optimizer, torch.amp.GradScaler(
        strategy.device.type, enabled=strategy.compute.dtype == torch.float16), steps, schedule if per_batch else None,
        recipe.named.fixed_statistics)
    peaks = dict(zip((group.name for group in groups), recipe.group_rates(groups, phase)))
    result.phases.append(PhaseRecord(phase.name, _trains_text(stage, result.built, recipe), phase.epochs,
                                     recipe.optimizer_name, recipe.schedule_name, peaks))
    for epoch in range(done + 1, done + phase.epochs + 1):
        epoch_started = time.perf_counter()
        rates = {group.name: settings["lr"] for group, settings in zip(groups, optimizer.param_groups)}
        progress = batch_reporter(callbacks.on_batch, epoch, recipe.epochs)
        if isinstance(loaders["train"].sampler, DistributedSampler):
            loaders["train"].sampler.set_epoch(epoch)
        train_loss, train_acc = train_one_epoch(stage.model, loaders["train"], result.built, learning, strategy,
                                                progress, stage.head_only)
        if not per_batch:
            schedule.step()
        strategy.sync_buffers(stage.model)
        val = evaluate(judge(), loaders["val"], strategy, progress)
        if not (math.isfinite(train_loss) and math.isfinite(val.loss)):
            result.status = "diverged"  # the weights are NaN or infinite from here on: keep the best so far
            raise _Diverged
        stats = EpochStats(epoch, train_loss, train_acc, val.loss, val.acc, time.perf_counter() - epoch_started,
                           max(rates.values()), phase.name, rates)
        result.history.append(stats)
        if val.acc > result.best_val_acc or result.best_epoch is None:
            result.best_val_acc, result.best_epoch, result.best_eval = val.acc, epoch, val
            best["state"] = copy_state(keeper)
        if callbacks.on_epoch:
            callbacks.on_epoch(stats)


def _trains_text(stage: Stage, built: BuiltModel, recipe: Recipe) -> str:
    if stage.head_only:
        return "the new last layer, on the frozen backbone's cached features"
    if built.scenario.train_backbone:
        return "every layer" + (", the BatchNorm statistics as pretrained" if recipe.named.fixed_statistics else "")
    return "the new last layer" + (", the backbone's BatchNorm statistics updating"
                                   if built.scenario.backbone_batchnorm_updates else "")


def _probe(stage: Stage, strategy: Strategy) -> PhaseRecord:
    """LP-FT's linear probe: the head's Linear fitted to convergence on every cached view of the training pictures
    (core.recipes.fit_probe), then evaluated."""
    linear = [layer for layer in stage.model.modules() if isinstance(layer, nn.Linear)][-1]
    features, labels = stage.loaders["train"].dataset.every_view()
    iterations = fit_probe(linear, features, labels)
    val = evaluate(stage.model, stage.loaders["val"], strategy)
    return PhaseRecord("probe", "the new last layer, fitted to convergence on the frozen backbone's features", 0,
                       "L-BFGS (logistic regression, scikit-learn's, C=1)", "-", {},
                       f"converged in {iterations} iterations; validation accuracy {val.acc:.3f}")


class _Diverged(Exception):
    """The loss became NaN or infinite: training stops at once, in whichever phase."""


def evaluation_model(config: TrainConfig, model: nn.Module) -> Callable[[], nn.Module]:
    """What gives the model to evaluate, with its current weights: on the fast path with its BatchNorm folded into
    its convolutions, else (or without BatchNorm, as a head on cached features) the model itself."""
    has_batchnorm = any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in model.modules())
    return folding.FoldedEvaluation(model) if config.fast and has_batchnorm else lambda: model


