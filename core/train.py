"""Training one run: the Trainer, and `train()`, its thin wrapper.

The Trainer is built from a run's settings (core.config.TrainConfig) and callbacks. It decides once where and how
the run trains (core.strategy), builds the model (core.models) and its loaders (core.loaders), computes a truly frozen
backbone's features once (core.feature_cache), runs the recipe's phases (core.loop, core.recipes) and returns the
result (core.results). By default it takes the fast paths: pictures decoded once, cached features for a truly frozen
backbone, evaluation with BatchNorm folded into the convolutions, channels-last, mixed precision on CUDA, compiled
steps where that pays (core.compiling); `fast=False` runs the tutorial's loop. Whoever called it saves the run.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core import folding
from core.config import TrainConfig
from core.data import DatasetScan
from core.device import forward_batch_size, one_cpu_thread
from core.distributed import SINGLE, World
from core.errors import ProcessLost, TrainingCancelled
from core.feature_cache import CachedFeatures, cacheable, head_of, headless
from core.loaders import LoaderSettings, decoded_loaders, disk_loaders, feature_loaders
from core.loop import batch_reporter, evaluate, evaluation_model, fit, outputs_of
from core.models import BuiltModel, build_model, get_scenario
from core.recipes import Recipe
from core.results import (
    NO_CALLBACKS,
    BatchProgress,
    Callbacks,
    EpochStats,
    EvalResult,
    OnBatch,
    OnEpoch,
    ScenarioPlan,
    TrainResult,
)
from core.strategy import Strategy

__all__ = ["BatchProgress", "Callbacks", "EpochStats", "EvalResult", "OnBatch", "OnEpoch", "TrainConfig",
           "TrainResult", "Trainer", "train"]


class Trainer:
    """One run, from its settings to its result. With several processes (`world`, started by torchrun) every process
    builds its Trainer and trains its share at once; they all stop at the same batch when any one's callback
    cancels, and they all end with the same weights (checked)."""

    def __init__(self, config: TrainConfig, weights: str | Path | None = None, callbacks: Callbacks = NO_CALLBACKS,
                 world: World = SINGLE):
        self.config, self.weights, self.recipe = config, weights, Recipe.of(config)
        self.strategy = Strategy.decide(config.device, config.fast, world)
        self.callbacks = Callbacks(self.strategy.agreeing(callbacks.on_batch), callbacks.on_epoch)

    # ------------------------------------------------------------ planning

    def phase_batches(self, scan: DatasetScan) -> dict[str, int]:
        """The batches a full run reports per phase: "features" once (0 unless a frozen backbone's features are
        cached), "train" and "val" in every epoch; with several processes, those of each process's share."""
        config, processes = self.config, self.strategy.processes
        count = {split: math.ceil(len(samples) / processes) for split, samples in scan.samples.items()}
        batch = max(1, config.batch_size // processes)
        batches = {"features": 0, **{split: math.ceil(count[split] / batch) for split in ("train", "val")}}
        if self.caches_features:
            size = forward_batch_size(self.strategy.device)
            batches["features"] = sum(math.ceil(n / size) * (config.cached_views if split == "train" else 1)
                                      for split, n in count.items())
        return batches

    def planned_batches(self, scan: DatasetScan) -> int:
        """How many times a full run calls on_batch: for progress bars."""
        return self.plan(scan).total_batches

    def plan(self, scan: DatasetScan) -> ScenarioPlan:
        """What training on `scan` will go through, phase by phase: batches, pictures and kinds of work (for the time
        left, core.eta, and an experiment's cost, core.experiment)."""
        config, scenario = self.config, get_scenario(self.config.scenario)
        batches = self.phase_batches(scan)
        count = {split: len(scan.samples[split]) for split in ("train", "val")}
        evaluated = sum(len(scan.samples[split]) for split in scan.evaluation_splits)
        cached = self.caches_features
        pictures = {"features": config.cached_views * count["train"] + evaluated if cached else 0, **count}
        train_kind = "head-train" if cached else "train-backbone" if scenario.train_backbone else "train-frozen"
        kinds = {"features": "forward", "train": train_kind, "val": "head-val" if cached else "forward"}
        return ScenarioPlan(config.scenario, self.recipe.epochs, batches, pictures, kinds)

    @property
    def caches_features(self) -> bool:
        """Whether the head trains on a truly frozen backbone's features, computed once."""
        return self.config.fast and cacheable(get_scenario(self.config.scenario))

    # ------------------------------------------------------------ the run

    def train(self, scan: DatasetScan, features: CachedFeatures | None = None) -> TrainResult:
        """Build the scenario's model, train it on a checked data set, and return the best weights and history, with
        their predictions on the test split when the data set has one. `features`: see `train()`."""
        scan.raise_if_invalid()
        config, strategy = self.config, self.strategy
        built = self.build(len(scan.classes))
        result = TrainResult(config=config, built=built, class_names=list(scan.classes), device=str(strategy.device),
                             placement=strategy.placement(config.batch_size))
        started = time.perf_counter()
        try:
            model, loaders = self.prepare(scan, built, features)
            with one_cpu_thread(strategy.device.type == "cpu" and model is not built.model):  # a head alone
                fit(result, model, loaders, strategy, self.callbacks)
            if not result.placement.interruption:
                strategy.check_identical(built.model)
            if "test" in loaders and result.best_epoch is not None and not result.placement.interruption:
                result.test_eval = evaluate(evaluation_model(config, model)(), loaders["test"], strategy)
        except TrainingCancelled:  # while caching features, before the first epoch
            result.status = "cancelled"
        except ProcessLost as lost:  # while caching features, or evaluating on test/
            if result.status == "completed" and len(result.history) < self.recipe.epochs:
                result.status = "cancelled"
            result.placement = replace(result.placement, interruption=str(lost))
        result.seconds = time.perf_counter() - started
        built.model.eval()
        return result

    def build(self, classes: int) -> BuiltModel:
        """The scenario's model, its new head drawn from the run's seed; every process starts from process 0's."""
        if self.config.seed is not None:
            torch.manual_seed(self.config.seed)
        built = build_model(self.config.backbone, self.config.scenario, classes, self.weights)
        self.strategy.share_state(built.model)
        self.strategy.seed_process(self.config.seed)
        return built

    def loader_settings(self, batch_size: int, shuffle: bool = True) -> LoaderSettings:
        return LoaderSettings(batch_size, self.config.workers, self.config.seed, shuffle, self.strategy.sampler)

    def prepare(self, scan: DatasetScan, built: BuiltModel, features: CachedFeatures | None = None
                ) -> tuple[nn.Module, dict[str, DataLoader]]:
        """What trains and its loaders (this process's share of them). Fast: pictures decoded once into memory (unless
        they would take more than core.decoded.MEMORY_BUDGET), and for a truly frozen backbone its features, computed
        up front (or given, already computed for `scan`'s pictures), train the head."""
        settings = self.loader_settings(self.strategy.per_process_batch(self.config.batch_size))
        model = self.strategy.compute.place(built.model)
        if not self.config.fast:
            return model, disk_loaders(scan, settings)
        if not self.caches_features:
            return model, decoded_loaders(scan, settings, self.strategy.device)
        features = features or self.cache_features(scan, built)
        return head_of(built)[2], feature_loaders(features, settings)

    def cache_features(self, scan: DatasetScan, built: BuiltModel) -> CachedFeatures:
        """A truly frozen backbone's features of every picture of `scan`: `cached_views` augmented views of each
        training picture (drawn with the run's seed), one of each evaluation picture. With several processes each
        computes those of its share of the pictures, and every process gets them all."""
        strategy, views = self.strategy, self.config.cached_views
        settings = self.loader_settings(forward_batch_size(strategy.device), shuffle=False)
        loaders = decoded_loaders(scan, settings, strategy.device)
        batches = sum(strategy.most_batches(loader) * (views if split == "train" else 1)
                      for split, loader in loaders.items())
        reporter = batch_reporter(self.callbacks.on_batch, 0, self.recipe.epochs)
        width = next(layer for layer in head_of(built)[2].modules() if isinstance(layer, nn.Linear)).in_features
        done = 0

        def report(_phase: str, _batch: int, _batches: int) -> None:
            nonlocal done
            done += 1
            reporter("features", done, batches)

        def features_of(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
            outputs, labels = outputs_of(model, loader, strategy, "features", report)
            outputs = torch.cat([torch.zeros((0, width), device=strategy.device), *(o.flatten(1) for o in outputs)])
            labels = torch.cat([torch.zeros(0, dtype=torch.long, device=strategy.device), *labels])
            count = len(loader.dataset)
            return strategy.gather_in_order(outputs, count), strategy.gather_in_order(labels, count)

        with headless(built) as backbone:
            folded = folding.FoldedEvaluation(strategy.compute.place(backbone))()
            passes = [features_of(folded, loaders["train"]) for _ in range(views)]
            evaluation = {split: TensorDataset(*features_of(folded, loader)) for split, loader in loaders.items()
                          if split != "train"}
        return CachedFeatures(TensorDataset(torch.stack([f for f, _ in passes], dim=1), passes[0][1]), evaluation)


def train(
    config: TrainConfig,
    scan: DatasetScan,
    weights: str | Path | None = None,
    on_batch: OnBatch | None = None,
    on_epoch: OnEpoch | None = None,
    features: CachedFeatures | None = None,
    world: World = SINGLE,
) -> TrainResult:
    """Build the scenario's model, train it on a checked data set, and return the best weights and history, with
    their predictions on the test split when the data set has one (Trainer.train).

    `features`, for a truly frozen backbone on the fast path only, are its features of `scan`'s pictures, computed
    before (an experiment computes them once for all its runs). A callback may raise TrainingCancelled: the run
    then stops, keeps its best epoch so far and is marked "cancelled". With several processes (`world`), a process
    lost on the way stops the others: their run keeps its best epoch, marked "cancelled", with the reason in
    `placement.interruption`.
    """
    return Trainer(config, weights, Callbacks(on_batch, on_epoch), world).train(scan, features)
