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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from core import folding
from core.config import TrainConfig
from core.data import DatasetScan
from core.decoded import eval_batches, view_batches
from core.device import forward_batch_size
from core.distributed import SINGLE, World
from core.errors import ProcessLost, TrainingCancelled
from core.feature_cache import CachedFeatures, cacheable, head_of, headless
from core.loaders import LoaderSettings, decoded_loaders, disk_loaders, feature_loaders
from core.loop import Stage, batch_reporter, evaluate, evaluation_model, fit
from core.models import BuiltModel, build_model, get_backbone, get_scenario
from core.presets import Preprocessing
from core.recipes import Phase, Recipe
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
from core.strategy import Strategy, reported

__all__ = ["BatchProgress", "Callbacks", "EpochStats", "EvalResult", "OnBatch", "OnEpoch", "TrainConfig",
           "TrainResult", "Trainer", "train"]


class Trainer:
    """One run, from its settings to its result. With several processes (`world`, started by torchrun) every process
    builds its Trainer and trains its share at once; they all stop at the same batch when any one's callback
    cancels, and they all end with the same weights (checked)."""

    def __init__(self, config: TrainConfig, weights: str | Path | None = None, callbacks: Callbacks = NO_CALLBACKS,
                 world: World = SINGLE):
        self.config, self.weights, self.recipe = config, weights, Recipe.of(config)
        self.preprocessing = get_backbone(config.backbone).preprocessing
        self.strategy = Strategy.decide(config.device, config.fast, world, self.preprocessing)
        self.callbacks = Callbacks(self.strategy.agreeing(callbacks.on_batch), callbacks.on_epoch)

    # ------------------------------------------------------------ planning

    def phase_batches(self, scan: DatasetScan) -> dict[str, int]:
        """The batches a full run reports per phase: "features" once (0 unless a frozen backbone's features are
        cached), "train" and "val" in every epoch; with several processes, those of each process's share."""
        config, processes = self.config, self.strategy.processes
        count = {split: math.ceil(len(samples) / processes) for split, samples in scan.samples.items()}
        batch = max(1, config.batch_size // processes)
        batches = {"features": 0, **{split: math.ceil(count[split] / batch) for split in ("train", "val")}}
        if self.computes_features:
            batches["features"] = sum(self.feature_batches(scan).values())
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
        features = self.feature_views * count["train"] + evaluated if self.computes_features else 0
        pictures = {"features": features, **count}
        train_kind = "head-train" if cached else "train-backbone" if scenario.train_backbone else "train-frozen"
        kinds = {"features": "forward", "train": train_kind, "val": "head-val" if cached else "forward"}
        head_epochs = 0 if cached or not self.computes_features else sum(
            phase.epochs for phase in self.recipe.phases if phase.trains == "head")
        return ScenarioPlan(config.scenario, self.recipe.epochs, batches, pictures, kinds, head_epochs)

    @property
    def caches_features(self) -> bool:
        """Whether the head trains on a truly frozen backbone's features, computed once."""
        return self.config.fast and cacheable(get_scenario(self.config.scenario), get_backbone(self.config.backbone))

    @property
    def feature_views(self) -> int:
        """Augmented views of each training picture whose features are computed: `cached_views`, but no more than
        the epochs that draw from them (a probe fits on one view of each picture, as a linear probe does)."""
        head_epochs = sum(max(phase.epochs, 1) for phase in self.recipe.phases if phase.trains == "head")
        return min(self.config.cached_views, head_epochs) if head_epochs else self.config.cached_views

    @property
    def computes_features(self) -> bool:
        """Whether a truly frozen backbone's features are computed before epoch 1: for every phase (`caches_features`)
        or for the recipe's probe or head epochs."""
        return self.caches_features or self.config.fast and get_backbone(self.config.backbone).pooled_head and any(
            phase.trains == "head" for phase in self.recipe.phases)

    # ------------------------------------------------------------ the run

    def train(self, scan: DatasetScan, features: CachedFeatures | None = None) -> TrainResult:
        """Build the scenario's model, train it on a checked data set, and return the best weights and history, with
        their predictions on the test split when the data set has one. `features`: see `train()`."""
        scan.raise_if_invalid()
        config, strategy = self.config, self.strategy
        built = self.build(len(scan.classes))
        result = TrainResult(config=config, built=built, class_names=list(scan.classes), device=str(strategy.device),
                             placement=strategy.placement(config.batch_size), preprocessing=self.preprocessing)
        started = time.perf_counter()
        try:
            stages, pictures = self.stages(scan, built, features)
            result.placement = replace(result.placement, pictures=pictures)
            fit(result, stages, strategy, self.callbacks)
            if not result.placement.interruption:
                strategy.check_identical(built.model)
            last = stages[-1]
            if "test" in last.loaders and result.best_epoch is not None and not result.placement.interruption:
                result.test_eval = evaluate(evaluation_model(config, last.model)(), last.loaders["test"], strategy)
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

    def stages(self, scan: DatasetScan, built: BuiltModel, features: CachedFeatures | None = None,
               phases: list[Phase] | None = None, evaluated: bool = True) -> tuple[list[Stage], str]:
        """Each phase of the recipe as it trains: what trains, its loaders (this process's share of them), and how
        they give it the pictures, in words. Fast: pictures decoded once into memory (unless they would take more
        than the memory budget, core.loaders.memory_budget); for a phase in which the backbone is truly frozen, its
        features, computed once up front (or given, already computed for `scan`'s pictures), train the head. `phases`:
        some of the recipe's (the learning-rate finder's), else all; without `evaluated`, no evaluation split's
        features are computed (the learning-rate finder's sweep looks at none)."""
        settings = self.loader_settings(self.strategy.per_process_batch(self.config.batch_size))
        model = self.strategy.compute.place(built.model)
        head_parameters = list(head_of(built)[2].parameters())
        phases = phases or self.recipe.phases
        if not self.config.fast:
            return ([Stage(phases[0], model, disk_loaders(scan, settings, self.preprocessing), head_parameters, False)],
                    "read from disk every epoch, as the tutorial reads them")
        on_features = [phase for phase in phases if phase.trains == "head" or self.caches_features]
        pictures, texts = {}, []
        if len(on_features) < len(phases):
            pictures, text = decoded_loaders(scan, settings, self.strategy.device, self.preprocessing)
            texts.append(text)
        if on_features:
            computed = "given" if features else "computed"
            features = features or self.cache_features(scan, built, evaluated=evaluated)
            on_cache = feature_loaders(features, settings)
            texts.append(f"each decoded once to compute the frozen backbone's features ({computed} before epoch 1), "
                         "then dropped: the head trains on the features" if not pictures else
                         "the frozen backbone's features computed once for the head's "
                         f"{'probe' if on_features[0].probe else 'epochs'}")
        head = head_of(built)[2]
        return ([Stage(phase, head, on_cache, head_parameters, True) if phase in on_features else
                 Stage(phase, model, pictures, head_parameters, False) for phase in phases], "; ".join(texts))

    def cache_features(self, scan: DatasetScan, built: BuiltModel, views: int | None = None,
                       evaluated: bool = True) -> CachedFeatures:
        """A truly frozen backbone's features of every picture of `scan` (`frozen_features`): `feature_views`
        augmented views of each training picture (drawn with the run's seed), unless `views` says otherwise."""
        reporter = batch_reporter(self.callbacks.on_batch, 0, self.recipe.epochs)
        return frozen_features(self.strategy, scan, built, views or self.feature_views,
                               lambda done, total: reporter("features", done, total), self.preprocessing,
                               evaluated)

    def feature_batches(self, scan: DatasetScan, views: int | None = None) -> dict[str, int]:
        return feature_batches(self.strategy, scan, views or self.feature_views)


def feature_batches(strategy: Strategy, scan: DatasetScan, views: int) -> dict[str, int]:
    """The batches of each split's features (the largest share's): `views` of every training picture."""
    size, processes = forward_batch_size(strategy.device), strategy.processes
    per_picture = {split: views if split == "train" else 1 for split in scan.samples}
    return {split: math.ceil(math.ceil(len(samples) / processes) * per_picture[split] / size)
            for split, samples in scan.samples.items()}


def frozen_features(strategy: Strategy, scan: DatasetScan, built: BuiltModel, views: int,
                    report: Callable[[int, int], None], preprocessing: Preprocessing, evaluated: bool = True
                    ) -> CachedFeatures:
    """The features that `built`'s backbone, truly frozen, gives every picture of `scan`: `views` augmented views of
    each training picture, one of each evaluation picture, each batch reported as (done, total). Each picture is
    decoded once, on threads, and dropped: none is kept (core.decoded). With several processes each computes those
    of its share of the pictures, and every process gets them all. Without `evaluated`, the training pictures'
    only."""
    size = forward_batch_size(strategy.device)
    splits = ["train", *(scan.evaluation_splits if evaluated else [])]
    shares = {split: strategy.share(len(scan.samples[split])) for split in splits}
    train, evaluation = preprocessing.train(), preprocessing.eval()
    streams = {split: view_batches(scan.samples[split], shares[split], views, size, train) if split == "train" else
               eval_batches(scan.samples[split], shares[split], size, evaluation) for split in splits}
    per_picture = {split: views if split == "train" else 1 for split in splits}
    totals = feature_batches(strategy, scan, views)
    width = next(layer for layer in head_of(built)[2].modules() if isinstance(layer, nn.Linear)).in_features
    done = 0

    def counted(_phase: str, _batch: int, _batches: int) -> None:
        nonlocal done
        done += 1
        report(done, sum(totals[split] for split in splits))

    features = {}
    with headless(built) as backbone:
        folded = folding.FoldedEvaluation(strategy.compute.place(backbone))()
        for split in splits:
            batches = reported(((crops, None) for crops in streams[split]), totals[split], "features", counted)
            outputs = [output.flatten(1) for output, _ in strategy.compute.outputs(folded, batches)]
            rows = torch.cat([torch.zeros((0, width), device=strategy.device), *outputs])
            count = len(scan.samples[split])
            rows = strategy.gather_in_order(rows.view(-1, per_picture[split] * width), count)
            labels = torch.tensor([label for _, label in scan.samples[split]], device=strategy.device)
            features[split] = TensorDataset(rows.view(count, per_picture[split], width) if split == "train"
                                            else rows, labels)
    return CachedFeatures(features.pop("train"), features)


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
