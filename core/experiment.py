"""Experiments: one data set, over a grid of backbones x scenarios x recipes x seeds x training pictures per class.

Each cell of the grid is an ordinary saved run, tagged with the experiment's name and its pictures per class
(core.runs.ExperimentCell), so Compare, Classify and export use it unchanged. For a seed and a size the training
pictures are a stratified draw that every scenario gets, and a seed's smaller draws lie inside its larger ones;
validation (and test) always use every picture. Running an experiment again resumes it: cells with a saved run
are skipped. A truly frozen backbone's features are computed once per experiment and backbone, for every picture
and cached view, and every frozen cell of that backbone trains its head on its own pictures' rows of them.

The experiment itself, its name, data set, recipes, backbones and the cells asked for so far, is kept in the runs
folder as experiments/NAME.json; the statistics over its runs come from core.stats.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from core import staging
from core.config import RECIPE_KNOBS, RECIPES
from core.data import DatasetScan
from core.decoded import decode
from core.device import Compute, one_cpu_thread
from core.distributed import SINGLE, World
from core.errors import RUNS_DIR, ConfigError, RunError, StudioError
from core.feature_cache import CachedFeatures, cacheable
from core.loaders import make_loader
from core.models import SCENARIOS, build_architecture, build_model, get_backbone, get_scenario, head_layer
from core.parallel import in_order
from core.recipes import Recipe, recipe_settings
from core.results import FORWARD_PASSES, ScenarioPlan
from core.runs import (
    EXPERIMENTS_FOLDER,
    ExperimentCell,
    RunRecord,
    accuracy_text,
    dataset_name,
    default_runs_dir,
    save_run,
)
from core.stats import Estimate, mean_interval, paired_difference, verdict
from core.train import Callbacks, OnBatch, OnEpoch, TrainConfig, Trainer, TrainResult

FORMAT = 3  # 1: one recipe, cells without it; 2: one backbone, cells without it
DEFAULT_SIZES: tuple[int | None, ...] = (1, 2, 5, 10, 25, None)  # None: every training picture
FEATURE_SEED = 0  # the augmented views whose features every frozen cell shares are drawn with this seed
DONE = ("completed", "diverged")  # a cell with such a run is not trained again; a cancelled one is
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")


def size_text(pictures_per_class: int | None) -> str:
    return "all" if pictures_per_class is None else str(pictures_per_class)


def parse_size(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        size = int(text)
    except ValueError:
        raise ConfigError(f"A size is a number of training pictures per class, or 'all' (got {text!r}).") from None
    if size < 1:
        raise ConfigError(f"A size must be at least 1 picture per class (got {size}).")
    return size


@dataclass(frozen=True)
class Cell:
    scenario: str
    seed: int
    pictures_per_class: int | None  # None: all
    recipe: str = "tutorial"
    backbone: str = TrainConfig.backbone

    @property
    def label(self) -> str:
        return (f"{self.arm(self.recipe != 'tutorial')} · seed {self.seed} · {size_text(self.pictures_per_class)} "
                "per class")

    def arm(self, with_recipe: bool, with_backbone: bool = False) -> str:
        """What the cell compares: its scenario, with its backbone and its recipe when the experiment has several."""
        parts = [self.backbone] if with_backbone else []
        return " · ".join([*parts, self.scenario, *([self.recipe] if with_recipe else [])])


def size_order(size: int | None) -> float:
    """Sizes from the smallest, "all" last."""
    return math.inf if size is None else size


@dataclass
class ExperimentPlan:
    """What an experiment trains: its backbones, its recipes, each a run's settings by recipe name (the backbone,
    scenario and seed are set per cell), and the grid. A scenario is paired with each recipe it can train with on
    each backbone (core.config)."""

    name: str
    data_dir: str
    recipe: TrainConfig  # the first recipe's settings (its backbone and device are every recipe's)
    scenarios: list[str]
    seeds: list[int]
    sizes: list[int | None]
    extra_cells: list[Cell] = field(default_factory=list)  # asked for by earlier grids of the same experiment
    excluded: list[str] = field(default_factory=list)  # pictures left out, from the data set's exclusion list
    recipes: dict[str, TrainConfig] = field(default_factory=dict)  # by name, `recipe` among them
    backbones: list[str] = field(default_factory=list)  # default: the recipe's

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ConfigError(f"An experiment's name has letters, digits, '-', '_' or '.', up to 80, and starts "
                              f"with a letter or digit (got {self.name!r}).")
        for scenario in self.scenarios:
            get_scenario(scenario)
        if not self.scenarios or not self.seeds or not self.sizes:
            raise ConfigError("An experiment needs at least one scenario, one seed and one size.")
        if any(isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 for seed in self.seeds):
            raise ConfigError(f"Seeds are whole numbers, at least 0 (got {self.seeds}).")
        for size in self.sizes:
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ConfigError(f"A size is a number of pictures per class, at least 1, or all (got {size!r}).")
        self.seeds = sorted(set(self.seeds))
        self.sizes = sorted(set(self.sizes), key=size_order)
        self.excluded = sorted(set(self.excluded))
        self.recipes = {**self.recipes, self.recipe.recipe: self.recipe}  # `recipe` is its recipe's settings
        self.backbones = list(dict.fromkeys(self.backbones or [self.recipe.backbone]))
        for backbone in self.backbones:
            get_backbone(backbone)
        if not self.grid():
            raise ConfigError(f"No recipe of {', '.join(self.recipes)} can train the scenario(s) "
                              f"{', '.join(self.scenarios)} on {', '.join(self.backbones)}: a recipe that trains the "
                              "backbone after its head needs the finetune or scratch scenario, and a backbone with a "
                              "last linear layer.")

    @property
    def several_recipes(self) -> bool:
        return len(self.recipes) > 1 or any(cell.recipe not in self.recipes for cell in self.extra_cells)

    @property
    def several_backbones(self) -> bool:
        return len({cell.backbone for cell in self.cells()}) > 1

    def arm_of(self, cell: Cell) -> str:
        return cell.arm(self.several_recipes, self.several_backbones)

    def label_of(self, cell: Cell) -> str:
        """The cell's label, with its backbone when the experiment has several."""
        return f"{cell.backbone} · {cell.label}" if self.several_backbones else cell.label

    def pairs(self) -> list[tuple[str, str, str]]:
        """(backbone, scenario, recipe) for every scenario that each recipe can train on each backbone."""
        return [(backbone, scenario, name) for backbone in self.backbones for scenario in self.scenarios
                for name, config in self.recipes.items() if trains_with(config, scenario, backbone)]

    def grid(self) -> list[Cell]:
        """The cells asked for now, backbone by backbone, scenario by scenario and recipe by recipe, each seed's
        sizes from the smallest: a stopped experiment already has whole curves."""
        return [Cell(scenario, seed, size, recipe, backbone) for backbone, scenario, recipe in self.pairs()
                for seed in self.seeds for size in self.sizes]

    def arm_configs(self) -> list[TrainConfig]:
        """One run's settings per backbone, scenario and recipe of the grid (the first seed's)."""
        return [self.config(Cell(scenario, self.seeds[0], None, recipe, backbone))
                for backbone, scenario, recipe in self.pairs()]

    def cells(self) -> list[Cell]:
        """The cells asked for now and before."""
        grid = self.grid()
        return grid + [cell for cell in self.extra_cells if cell not in grid]

    def config(self, cell: Cell) -> TrainConfig:
        return replace(self.recipes[cell.recipe], scenario=cell.scenario, seed=cell.seed, backbone=cell.backbone)

    def recipe_key(self) -> dict:
        """What the experiment's runs share: the data set, the excluded pictures and each recipe's settings but its
        backbone (a backbone added to an experiment is no change)."""
        return {"data_dir": str(Path(self.data_dir).resolve()),
                **({"excluded pictures": self.excluded} if self.excluded else {}),
                **{f"recipe {name}": {key: value for key, value in recipe_settings(config, scenario=False).items()
                                      if key != "backbone"} for name, config in self.recipes.items()}}

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "data_dir": str(Path(self.data_dir).resolve()),
                "recipe": self.recipe.to_dict(), "recipes": {name: config.to_dict()
                                                             for name, config in self.recipes.items()},
                "backbones": self.backbones,
                "cells": [[c.scenario, c.seed, c.pictures_per_class, c.recipe, c.backbone] for c in self.cells()],
                "excluded": self.excluded}

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentPlan:
        if data.get("format") not in (1, 2, FORMAT):
            raise ValueError(f"unknown experiment format {data.get('format')!r}")
        recipe = TrainConfig(**data["recipe"])
        cells = [Cell(str(scenario), int(seed), size, str(rest[0]) if rest else recipe.recipe,
                      str(rest[1]) if len(rest) > 1 else recipe.backbone)  # formats 1 and 2: the recipe's
                 for scenario, seed, size, *rest in data["cells"]]
        if not cells:
            raise ValueError("it lists no cells")
        first = cells[0]
        excluded = data.get("excluded", [])
        if not isinstance(excluded, list) or not all(isinstance(file, str) for file in excluded):
            raise ValueError("its excluded pictures are not a list of names")
        recipes = {name: TrainConfig(**config) for name, config in data.get("recipes", {}).items()}
        return cls(data["name"], data["data_dir"], recipe, [first.scenario], [first.seed], [first.pictures_per_class],
                   extra_cells=cells, excluded=excluded, recipes=recipes, backbones=[first.backbone])


def recipe_configs(settings: dict, recipes: list[str], scenarios: list[str], **chosen) -> dict[str, TrainConfig]:
    """Each recipe's settings for an experiment of `scenarios`, from a caller's `settings` (TrainConfig.from_settings:
    a setting not given takes each recipe's own value). A recipe that can train none of the scenarios is refused."""
    configs = {}
    for name in dict.fromkeys(recipes):
        errors = []
        for scenario in scenarios:
            try:
                configs[name] = TrainConfig.from_settings({**settings, "recipe": name}, scenario=scenario, **chosen)
                break
            except ConfigError as error:
                errors.append(error)
        else:
            raise errors[0] if len(scenarios) == 1 else ConfigError(
                f"The {name} recipe can train none of the scenarios {', '.join(scenarios)}: {errors[0]}")
    return configs


def trains_with(config: TrainConfig, scenario: str, backbone: str | None = None) -> bool:
    """Whether a run of `config`'s recipe can train `scenario` (a recipe that unfreezes needs one that trains the
    backbone), on `backbone` (default: the recipe's; a recipe that trains the head alone needs a linear one)."""
    try:
        replace(config, scenario=scenario, backbone=backbone or config.backbone)
    except ConfigError:
        return False
    return True


def default_name(data_dir: Path, recipes: list[TrainConfig], excluded: list[str] = (),
                 backbones: list[str] = ()) -> str:
    """A name that the same data set, recipes, backbones and excluded pictures always get: running the same command
    again resumes. The recipe knobs at the tutorial's values are left out of it, so that names given before recipes
    existed stay, and so are the backbones but the recipes' when there is one."""
    tutorial = TrainConfig().to_dict()
    keys = [{name: value for name, value in recipe_settings(recipe, scenario=False).items()
             if not (name in RECIPE_KNOBS and value == tutorial[name])} for recipe in recipes]
    first = recipes[0]
    backbones = list(dict.fromkeys(backbones or [first.backbone]))
    several = [backbones] if len(backbones) > 1 else []
    identity = [str(Path(data_dir).resolve()), *keys] + ([sorted(set(excluded))] if excluded else []) + several
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:6]
    backbone = first.backbone if len(backbones) == 1 else f"{len(backbones)}backbones"
    what = f"{first.epochs}ep" if len(recipes) == 1 else "-".join(recipe.recipe for recipe in recipes)
    return f"{dataset_name(data_dir)}-{backbone}-{what}"[:80 - len(digest) - 1] + f"-{digest}"  # NAME's length


# ---------------------------------------------------------------- the experiments folder

def experiments_dir(runs_dir: Path | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / EXPERIMENTS_FOLDER


def read_plan(name: str, runs_dir: Path | None = None) -> ExperimentPlan:
    path = experiments_dir(runs_dir) / f"{name}.json"
    try:
        return ExperimentPlan.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RunError(f"No experiment {name!r} in {path.parent}.", RUNS_DIR) from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RunError(f"{path} is damaged ({type(exc).__name__}: {exc}). Remove it to start the experiment afresh "
                       "(its runs stay), or give the experiment another name.", RUNS_DIR) from exc


def list_plans(runs_dir: Path | None = None) -> list[ExperimentPlan]:
    """Every readable experiment in the runs folder, the most recently changed first."""
    folder = experiments_dir(runs_dir)
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    plans = []
    for path in paths:
        with contextlib.suppress(RunError):
            plans.append(read_plan(path.stem, runs_dir))
    return plans


def record_plan(plan: ExperimentPlan, runs_dir: Path | None = None) -> ExperimentPlan:
    """Keep `plan` in the runs folder, merged with the cells asked for before under its name. An experiment of that
    name with another data set or recipe is refused: its runs could not be compared."""
    folder = experiments_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)  # one NAME.json per experiment
    path = folder / f"{plan.name}.json"
    merged = plan
    if path.exists():
        before = read_plan(plan.name, runs_dir)
        old, new = before.recipe_key(), plan.recipe_key()
        changed = []  # a recipe added to the experiment is no change
        for key in dict.fromkeys([*new, *old]):
            if key.startswith("recipe ") and key in old and key in new:
                changed += [name for name in dict.fromkeys([*new[key], *old[key]])
                            if old[key].get(name) != new[key].get(name)]
            elif not key.startswith("recipe ") and old.get(key) != new.get(key):
                changed.append(key)
        if changed := list(dict.fromkeys(changed)):
            raise ConfigError(f"Experiment {plan.name!r} was made with another {', '.join(changed)}; its runs could "
                              "not be compared with these. Give the experiment another name, or the same settings.")
        merged = replace(plan, extra_cells=[c for c in before.cells() if c not in plan.cells()],
                         recipes={**before.recipes, **plan.recipes})
    with staging.staging_file(path) as partial:
        partial.write_text(json.dumps(merged.to_dict(), indent=2))
        partial.rename(path)
    return merged


# ---------------------------------------------------------------- the pictures of a cell

def subset(scan: DatasetScan, pictures_per_class: int | None, seed: int) -> DatasetScan:
    """`scan` with at most `pictures_per_class` training pictures of each class (None: all), drawn by `seed`.

    Each class's pictures, class after class, are put in an order drawn from `seed`, and a size takes the first of
    them: the same pictures for every scenario, and a seed's smaller draws inside its larger ones. They keep the
    data set's order. Validation and test pictures are all kept."""
    if pictures_per_class is None:
        return replace(scan, samples=dict(scan.samples))
    by_class: list[list[int]] = [[] for _ in scan.classes]
    for index, (_, label) in enumerate(scan.samples["train"]):
        by_class[label].append(index)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for of_class in by_class:
        order = torch.randperm(len(of_class), generator=generator).tolist()
        chosen += [of_class[i] for i in order[:pictures_per_class]]
    return replace(scan, samples={**scan.samples, "train": [scan.samples["train"][i] for i in sorted(chosen)]})


# ---------------------------------------------------------------- training the cells

def cell_of(run: RunRecord) -> Cell | None:
    if run.experiment is None or run.config.seed is None:
        return None
    return Cell(run.scenario, run.config.seed, run.experiment.pictures_per_class, run.config.recipe, run.backbone)


def cell_runs(name: str, runs: list[RunRecord]) -> dict[Cell, RunRecord]:
    """The saved run of each finished cell of experiment `name` (the newest when a cell has several)."""
    found: dict[Cell, RunRecord] = {}
    for run in sorted(runs, key=lambda r: (r.created, r.id)):
        cell = cell_of(run)
        if cell and run.experiment.experiment == name and run.status in DONE:
            found[cell] = run
    return found


def pending(plan: ExperimentPlan, runs: list[RunRecord], cells: list[Cell] | None = None) -> list[Cell]:
    """The cells of `cells` (by default all the experiment's) that have no saved run yet."""
    done = cell_runs(plan.name, runs)
    return [cell for cell in (plan.cells() if cells is None else cells) if cell not in done]


class ExperimentRunner:
    """Trains and saves an experiment's cells, one at a time, on a checked data set.

    With several processes (`world`, started by torchrun) each process trains and saves its own cells (`share`),
    alone; each frozen backbone's features are computed by all of them together first (`compute_shared_features`).
    """

    def __init__(self, plan: ExperimentPlan, scan: DatasetScan, runs_dir: Path | None = None,
                 weights: str | Path | None = None, world: World = SINGLE):
        scan.raise_if_invalid()  # without the plan's excluded pictures: core.exclusions.training_scan left them out
        self.plan, self.scan, self.runs_dir, self.weights, self.world = plan, scan, runs_dir, weights, world
        self._features: dict[str, CachedFeatures] = {}  # by backbone
        self.features_seconds: dict[str, float] = {}  # how long each backbone's took
        self._scans: dict[Cell, DatasetScan] = {}
        self._position = {path: i for i, (path, _) in enumerate(scan.samples["train"])}
        self.feature_passes = 0  # how many times a backbone's features were computed: once per backbone

    def shares_features(self, cell: Cell) -> bool:
        """Whether the cell's head trains on the backbone's features that the experiment computes once: a truly
        frozen pretrained backbone's, in every epoch (frozen) or in a probe or head epochs (lp-ft, fine-tune)."""
        config = self.plan.config(cell)
        return Trainer(config).computes_features and get_scenario(config.scenario).pretrained

    def cell_scan(self, cell: Cell) -> DatasetScan:
        """The data set as the cell trains on it: its share of the training pictures (`subset`)."""
        if cell not in self._scans:
            self._scans[cell] = subset(self.scan, cell.pictures_per_class, cell.seed)
        return self._scans[cell]

    def train_cell(self, cell: Cell, on_batch: OnBatch | None = None, on_epoch: OnEpoch | None = None) -> TrainResult:
        """Train one cell; its frozen backbone's features, when it has one, are computed for the first such cell
        (reported as its "features" phase) and reused by the others."""
        config, cell_scan = self.plan.config(cell), self.cell_scan(cell)
        features = None
        if self.shares_features(cell):
            features = self._shared_features(config, on_batch)
            features = features.select([self._position[path] for path, _ in cell_scan.samples["train"]])
        return Trainer(config, self.weights, Callbacks(on_batch, on_epoch)).train(cell_scan, features)

    def compute_shared_features(self, cells: list[Cell], on_batch: OnBatch | None = None) -> None:
        """Each frozen backbone's features that a cell of `cells` uses, computed now: with several processes every
        process calls this at once and computes its share of the pictures."""
        shared = {cell.backbone: cell for cell in reversed(cells) if self.shares_features(cell)}
        for cell in reversed(shared.values()):
            self._shared_features(self.plan.config(cell), on_batch)

    def save(self, cell: Cell, result: TrainResult) -> RunRecord:
        cell_scan = self.cell_scan(cell)
        files = None if cell.pictures_per_class is None else [str(path.relative_to(self.scan.root))
                                                               for path, _ in cell_scan.samples["train"]]
        shared = self.shares_features(cell)
        tag = ExperimentCell(self.plan.name, cell.pictures_per_class, shared, files,
                             self.features_seconds.get(cell.backbone) if shared else None)
        return save_run(result, cell_scan, self.runs_dir, tag)

    def _shared_features(self, config: TrainConfig, on_batch: OnBatch | None) -> CachedFeatures:
        if config.backbone not in self._features:
            started = time.perf_counter()
            trainer = Trainer(replace(config, seed=FEATURE_SEED), self.weights, Callbacks(on_batch), self.world)
            with torch.random.fork_rng(devices=[]):  # the views are FEATURE_SEED's, whatever ran before
                self._features[config.backbone] = trainer.cache_features(
                    self.scan, trainer.build(len(self.scan.classes)), config.cached_views)  # for the first cell
            self.features_seconds[config.backbone] = time.perf_counter() - started
            self.feature_passes += 1
        return self._features[config.backbone]


def cell_plans(plan: ExperimentPlan, scan: DatasetScan, cells: list[Cell]) -> list[ScenarioPlan]:
    """What each cell goes through, for the time left (core.eta): each backbone's shared features once, in the
    first cell that needs them."""
    plans, features_counted = [], set()
    for cell in cells:
        config = plan.config(cell)
        cell_plan = Trainer(config).plan(subset(scan, cell.pictures_per_class, cell.seed))
        if cell_plan.batches["features"] and get_scenario(cell.scenario).pretrained:  # shared: ExperimentRunner
            views = config.cached_views  # as the experiment computes them, whichever cell needs them first
            batches = sum(Trainer(config).feature_batches(scan, views).values())
            pictures = views * len(scan.samples["train"]) + sum(len(scan.samples[split])
                                                                for split in scan.evaluation_splits)
            cell_plan.batches["features"] = 0 if cell.backbone in features_counted else batches
            cell_plan.pictures["features"] = 0 if cell.backbone in features_counted else pictures
            features_counted.add(cell.backbone)
        plans.append(cell_plan)
    return plans


def share(plan: ExperimentPlan, scan: DatasetScan, cells: list[Cell], processes: int) -> list[list[Cell]]:
    """`cells` dealt to `processes` processes that train them alone: the largest first, each to the process with the
    least work so far, counted in backbone passes over pictures (core.eta; the head alone on cached features counts
    as almost nothing). Each process's cells keep the grid's order."""
    if processes == 1:
        return [cells]
    weight = {**FORWARD_PASSES, "head-train": 0.01, "head-val": 0.01}
    work = {cell: cell_plan.epochs * sum(cell_plan.pictures[phase] * weight[cell_plan.kinds[phase]]
                                         for phase in ("train", "val"))
            for cell, cell_plan in zip(cells, cell_plans(plan, scan, cells))}
    loads, dealt = [0.0] * processes, [[] for _ in range(processes)]
    for cell in sorted(cells, key=lambda cell: -work[cell]):
        least = loads.index(min(loads))
        loads[least] += work[cell]
        dealt[least].append(cell)
    return [[cell for cell in cells if cell in mine] for mine in dealt]


# ---------------------------------------------------------------- time before starting

@dataclass(frozen=True)
class TimeEstimate:
    seconds: float
    cells: int
    basis: str  # where the seconds per epoch come from, in words


def estimate_seconds(plan: ExperimentPlan, scan: DatasetScan, cells: list[Cell],
                     runs: list[RunRecord]) -> TimeEstimate:
    """The time `cells` will take, from seconds per epoch measured in saved runs of the same backbone and device
    (scaled by the pictures each epoch goes through), or else timed now on each backbone's forward and backward
    passes. A frozen backbone's features are counted once, as the experiment computes them, the pictures decoded
    for them too; each cell adds the building of its model and the saving of its run, and the head alone on cached
    features its measured batches."""
    device = str(Trainer(plan.recipe).strategy.device)
    val = sum(len(scan.samples[split]) for split in scan.evaluation_splits)
    train = scan.samples["train"]
    decoding = _decode_seconds(tuple(path for path, _ in _sample(train)))
    each = "each backbone" if len({cell.backbone for cell in cells}) > 1 else "the backbone"
    total, sources = 0.0, {f"a measurement of {each} now"} if cells else set()
    for cell, cell_plan in zip(cells, cell_plans(plan, scan, cells)):
        config = plan.config(cell)
        measured = _measured_seconds_per_picture(runs, cell.backbone, device)
        probe = _probe(cell.backbone, device)
        total += probe["setup"]
        train_pictures, epochs, kind = cell_plan.pictures["train"], cell_plan.epochs, cell_plan.kinds["train"]
        if cell_plan.pictures["features"]:  # the shared features: in the first cell that computes them
            per_train, per_evaluated = _features_seconds(
                (config.backbone, config.device, config.fast, config.cached_views), _sample(train),
                _sample([sample for split in scan.evaluation_splits for sample in scan.samples[split]]))
            total += per_train * len(train) + per_evaluated * val
        if kind == "head-train":
            total += probe["head-batch"] * epochs * (cell_plan.batches["train"] + cell_plan.batches["val"])
            continue
        per_picture = measured.get(kind) or probe[kind]
        if kind in measured:
            sources.add("your saved runs")
        passes = FORWARD_PASSES[kind] * train_pictures + val
        total += decoding * (train_pictures + val) + epochs * per_picture * passes
    return TimeEstimate(total, len(cells), " and ".join(sorted(sources)) or "nothing to train")


def estimate_training(configs: list[TrainConfig], scan: DatasetScan, runs: list[RunRecord]) -> TimeEstimate:
    """The time a job training `configs` (one recipe, its scenarios) on all of `scan`'s pictures will take, as
    estimate_seconds estimates an experiment's cells."""
    recipe = configs[0]
    plan = ExperimentPlan("training", str(scan.root), recipe, [config.scenario for config in configs], [recipe.seed],
                          [None])
    return estimate_seconds(plan, scan, plan.grid(), runs)


def _measured_seconds_per_picture(runs: list[RunRecord], backbone: str, device: str) -> dict[str, float]:
    """Seconds per forward-pass-equivalent picture, from the newest trained runs of each kind of work."""
    found: dict[str, float] = {}
    for run in runs:
        if run.backbone != backbone or run.device != device or not run.config.fast or len(run.history) < 2:
            continue
        scenario = get_scenario(run.scenario)
        if cacheable(scenario, get_backbone(backbone)):
            continue
        kind = "train-backbone" if scenario.train_backbone else "train-frozen"
        counts = {split: sum(per_class.values()) for split, per_class in run.dataset.counts.items()}
        pictures = FORWARD_PASSES[kind] * counts.get("train", 0) + sum(n for s, n in counts.items() if s != "train")
        epoch = statistics.median(e.seconds for e in run.history[1:])
        found.setdefault(kind, epoch / max(pictures, 1))
    return found


@torch.no_grad()
def _time_forward(model, batch) -> float:
    started = time.perf_counter()
    model(batch)
    return time.perf_counter() - started


@functools.cache
def _probe(backbone: str, device: str, batch_size: int = 4, repeats: int = 3) -> dict[str, float]:
    """Timed on random pictures (once per process): seconds per picture of the backbone's forward pass and of a
    training step; seconds per batch of its head alone on cached features; and a cell's setup, building the model
    and saving its weights."""
    started = time.perf_counter()
    model = build_architecture(backbone, 2)
    torch.save(model.state_dict(), io.BytesIO())
    setup = time.perf_counter() - started
    head = model.get_submodule(head_layer(model))
    compute = Compute.fastest(torch.device(device))
    model = compute.place(model)
    side = get_backbone(backbone).preprocessing.crop
    batch = compute.inputs(torch.randn(batch_size, 3, side, side))
    model.eval()
    _time_forward(model, batch)
    forward = min(_time_forward(model, batch) for _ in range(repeats)) / batch_size
    model.train()
    steps = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        model(batch).sum().backward()
        steps.append(time.perf_counter() - started)
    step = min(steps[1:]) / batch_size
    head_alone = {"head-batch": _time_head(head, batch_size, device)} if get_backbone(backbone).pooled_head else {}
    return {"forward": forward, "train-frozen": forward, "train-backbone": step / FORWARD_PASSES["train-backbone"],
            "setup": setup, **head_alone}


def _time_head(head: nn.Module, batch_size: int, device: str, batches: int = 64) -> float:
    """Seconds per batch of a head trained alone on cached features, loader and optimiser step included, as a run
    trains it (core.train.fit on one CPU thread)."""
    features = torch.randn(batches * batch_size, head.in_features)
    loader = make_loader(TensorDataset(features, torch.randint(0, 2, (len(features),))), batch_size, shuffle=True)
    head = head.to(device)
    recipe = Recipe.of(TrainConfig())
    phase, parameters = recipe.phases[0], list(head.parameters())
    loss, optimizer = recipe.loss(), recipe.optimizer(recipe.groups(parameters, parameters, phase), phase)
    with one_cpu_thread(device == "cpu"):
        started = time.perf_counter()
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss(head(inputs.to(device)), labels.to(device)).backward()
            optimizer.step()
        return (time.perf_counter() - started) / batches


def _sample(samples: list[tuple[Path, int]], count: int = 16) -> tuple[tuple[Path, int], ...]:
    """`count` of `samples` spread evenly over them."""
    return tuple(samples[::max(len(samples) // count, 1)][:count])


@functools.cache
def _features_seconds(settings: tuple[str, str, bool, int], train: tuple, evaluated: tuple) -> tuple[float, float]:
    """Seconds per training picture (its views) and per evaluation picture of a frozen backbone's features, timed now
    on a few of the data set's pictures as Trainer.cache_features computes them (decoding on threads while the
    backbone runs), batch by batch, the first batch left out as warm-up (once per process). `settings`: the run's
    backbone, device, fast and cached views. Untrained weights: the same arithmetic."""
    backbone, device, fast, views = settings
    ended: list[float] = []  # when each batch ended
    trainer = Trainer(TrainConfig(backbone=backbone, scenario="scratch", device=device, fast=fast, cached_views=views,
                                  workers=0), callbacks=Callbacks(lambda _progress: ended.append(time.perf_counter())))
    sample = DatasetScan(Path("."), ["sample"], samples={"train": list(train), "val": list(evaluated)})
    batches = trainer.feature_batches(sample)["train"]
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # the crops drawn here take nothing from the runs' random numbers
        trainer.cache_features(sample, build_model(backbone, "scratch", 2))
    if not train or not ended:
        return 0.0, (ended[-1] - started if ended else 0.0) / max(len(evaluated), 1)
    train_ended = ended[batches - 1]
    warmed = (train_ended - ended[0]) / (batches - 1) * batches if batches > 1 else train_ended - started
    return warmed / len(train), (ended[-1] - train_ended) / max(len(evaluated), 1)


@functools.cache
def _decode_seconds(paths: tuple[Path, ...]) -> float:
    """Seconds to decode one picture, timed on a few of the data set's as InMemoryData decodes them, on threads
    (once per process)."""
    def decoded(path: Path) -> None:
        with contextlib.suppress(StudioError):
            decode(path)

    started = time.perf_counter()
    for _ in in_order(decoded, paths):
        pass
    return (time.perf_counter() - started) / max(len(paths), 1)


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class SizeResult:
    """One arm at one size, over its seeds. `scenario` is the arm: with several recipes, "finetune · lp-ft"; with
    several backbones, "mobilenet_v2 · frozen"."""

    scenario: str
    pictures_per_class: int | None
    train_pictures: float  # per class, as trained (a class with fewer pictures gives what it has)
    seeds: list[int]
    best_val: Estimate  # each run's best epoch, chosen on the validation pictures: optimistic
    final_val: Estimate
    test: Estimate | None  # when the data set has test/
    seconds: float = 0.0  # a run's mean time on its own (`run_seconds`), from building its model to its last epoch
    backbone: str = TrainConfig.backbone
    parameters: int = 0  # the whole model's


@dataclass(frozen=True)
class Comparison:
    pictures_per_class: int | None
    first: str
    second: str
    difference: Estimate  # first's accuracy minus second's, paired over seeds and pictures
    split: str  # "validation" or "test"
    pictures: int
    seeds: int

    @property
    def text(self) -> str:
        return verdict(self.first, self.second, self.difference, self.pictures, self.seeds, self.split)


@dataclass
class ExperimentResults:
    plan: ExperimentPlan
    runs: dict[Cell, RunRecord]
    rows: list[SizeResult]
    comparisons: list[Comparison]

    @property
    def done(self) -> int:
        return sum(cell in self.runs for cell in self.plan.cells())

    def arms(self) -> list[str]:
        """What the experiment compares, in order: its scenarios, each with its backbone and its recipe when it has
        several, backbone by backbone in the order they were asked for."""
        backbones = list(dict.fromkeys(cell.backbone for cell in self.plan.cells()))
        cells = sorted(self.plan.cells(), key=lambda cell: (backbones.index(cell.backbone),
                                                           list(SCENARIOS).index(cell.scenario),
                                                           list(RECIPES).index(cell.recipe)))
        return list(dict.fromkeys(self.plan.arm_of(cell) for cell in cells))

    def runs_of(self, arm: str, pictures_per_class: int | None) -> list[RunRecord]:
        """The runs of one arm (`arms`) at one size."""
        return [run for cell, run in sorted(self.runs.items(), key=lambda item: item[0].seed)
                if self.plan.arm_of(cell) == arm and cell.pictures_per_class == pictures_per_class]

    def trade_offs(self, pictures_per_class: int | None, cost: str = "seconds",
                   metric: str = "best_val") -> list[SizeResult]:
        """The rows at one size that no other row beats on accuracy (`metric`'s mean) at no more `cost` ("seconds"
        per run or "parameters"): the best trade-offs, from the cheapest."""
        rows = [row for row in self.rows if row.pictures_per_class == pictures_per_class and getattr(row, metric)]
        return sorted((row for row in rows if not any(
            getattr(other, metric).value > getattr(row, metric).value and getattr(other, cost) <= getattr(row, cost)
            for other in rows)), key=lambda row: getattr(row, cost))


def accuracy_mean(values: list[float]) -> Estimate:
    """The mean of accuracies over seeds with its 95% interval, kept within 0 and 1."""
    mean = mean_interval(values)
    return replace(mean, low=max(mean.low, 0.0), high=min(mean.high, 1.0))


FEWEST_SEEDS = 3  # a 95% interval over fewer seeds (Student t on 2 values) spans about everything: not shown


def mean_text(mean: Estimate) -> str:
    """A mean over seeds for tables, with its 95% interval from FEWEST_SEEDS seeds on, else why it has none:
    "0.817 [2 seeds: an interval needs 3]"."""
    if mean.n < FEWEST_SEEDS:
        return f"{mean.value:.3f} [{mean.n} seed{'s' if mean.n != 1 else ''}: an interval needs {FEWEST_SEEDS}]"
    return accuracy_text(mean)


def learning_curve(runs: list[RunRecord], metric: str = "val_acc") -> list[Estimate]:
    """Per epoch, the mean of `metric` over `runs` (repeats of one recipe) with its 95% interval, over the runs
    that reached that epoch. Accuracies are kept within 0 and 1."""
    longest = max((len(run.history) for run in runs), default=0)
    mean = accuracy_mean if metric.endswith("acc") else mean_interval
    return [mean([getattr(run.history[epoch], metric) for run in runs if len(run.history) > epoch])
            for epoch in range(longest)]


def repeats(runs: list[RunRecord]) -> list[list[RunRecord]]:
    """`runs` in groups, in order of first appearance: runs that differ by their seed only (same scenario, data,
    training pictures and recipe) share a group."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        recipe = recipe_settings(run.config)
        size = run.experiment.pictures_per_class if run.experiment else None
        key = json.dumps([recipe, str(run.dataset.root), run.dataset.counts, size], sort_keys=True)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def results(plan: ExperimentPlan, runs: list[RunRecord]) -> ExperimentResults:
    """The experiment's saved cells with, per scenario (and recipe, `ExperimentResults.arms`) and size, means over
    seeds with 95% intervals, and, per size, each pair's paired difference with its verdict."""
    found = {cell: run for cell, run in cell_runs(plan.name, runs).items() if cell in plan.cells() and run.trained}
    outcome = ExperimentResults(plan, found, [], [])
    scenarios = outcome.arms()
    sizes = sorted({cell.pictures_per_class for cell in plan.cells()}, key=size_order)
    for size in sizes:
        for scenario in scenarios:
            chosen = outcome.runs_of(scenario, size)
            if not chosen:
                continue
            tests = [run.test() for run in chosen]
            outcome.rows.append(SizeResult(
                scenario, size, statistics.mean(run.dataset.total("train") / len(run.class_names) for run in chosen),
                [run.config.seed for run in chosen], accuracy_mean([run.best_val().value for run in chosen]),
                accuracy_mean([run.final_val().value for run in chosen]),
                accuracy_mean([t.value for t in tests]) if all(tests) else None,
                statistics.mean(run_seconds(run) for run in chosen), chosen[0].backbone, chosen[0].total_params))
        for first, second in combinations(scenarios, 2):
            a = {run.config.seed: run for run in outcome.runs_of(first, size)}
            b = {run.config.seed: run for run in outcome.runs_of(second, size)}
            if comparison := compare_seeds(a, b, first, second, size):
                outcome.comparisons.append(comparison)
    return outcome


def run_seconds(run: RunRecord) -> float:
    """What the run would take on its own: its training, and computing the frozen features it shared."""
    return run.seconds + ((run.experiment.features_seconds or 0.0) if run.experiment else 0.0)


def compare_seeds(a: dict[int, RunRecord], b: dict[int, RunRecord], first: str, second: str,
                  size: int | None) -> Comparison | None:
    """The paired difference of runs `a` (named `first`) and `b` (`second`), seed by seed, over the seeds both have,
    on test/ when every run has it, else on the validation pictures (with each run's best epoch); None when they
    share no seed or their pictures differ."""
    seeds = sorted(a.keys() & b.keys())
    pairs = [(a[seed], b[seed]) for seed in seeds]
    if not pairs:
        return None
    split = "test" if all(r.test_predictions for pair in pairs for r in pair) else "validation"
    predictions = [[getattr(r, "test_predictions" if split == "test" else "val_predictions") for r in pair]
                   for pair in pairs]
    if any(p is None for pair in predictions for p in pair) or len({tuple(p.files) for pair in predictions
                                                                     for p in pair}) != 1:
        return None  # the pictures changed between runs: nothing to pair
    correct_a = [pa.correct for pa, _ in predictions]
    correct_b = [pb.correct for _, pb in predictions]
    difference = paired_difference(correct_a, correct_b)
    return Comparison(size, first, second, difference, split, len(correct_a[0]), len(seeds))

