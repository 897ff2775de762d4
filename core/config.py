"""A run's settings, in one small dataclass: what the caller (the command line, a page's form, a job, an experiment's
cell) builds once and hands down.

They hold three things, each read by one part: the recipe (how the run learns: core.recipes.Recipe.of), where and how
it trains (the device and the fast paths: core.strategy), and how its data is loaded (the workers, the cached views:
core.loaders). Defaults are the tutorial's; a named recipe (`RECIPES`, below) brings its own (`from_settings`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from core.errors import ConfigError
from core.models import get_backbone, get_scenario

# The settings that recipes brought (a run saved before them has the tutorial's values).
RECIPE_KNOBS = ("recipe", "optimizer", "schedule", "weight_decay", "label_smoothing", "head_epochs", "lr_spread")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "one-cycle", "cosine")


@dataclass(frozen=True)
class NamedRecipe:
    """A recipe by name: its values of a run's settings, and what core.recipes.Recipe does differently for it."""

    name: str
    title: str
    summary: str  # what it does and where it comes from, in one line
    settings: dict  # its values of a run's settings; the others are the tutorial's
    unfreeze_factor: float = 1.0  # the base rate's factor once the backbone trains after a head phase
    probe: bool = False  # a linear probe fitted to convergence before the first epoch
    fixed_statistics: bool = False  # the backbone's BatchNorm statistics stay as pretrained while it trains


RECIPES: dict[str, NamedRecipe] = {recipe.name: recipe for recipe in (
    NamedRecipe("tutorial", "The tutorial's (2017)",
                "SGD with momentum 0.9, lr 0.001, the rate x0.1 every 7 epochs, 25 epochs: the PyTorch tutorial's.",
                {}),
    NamedRecipe("fine-tune", "fastai's fine_tune",
                "The new head trains 1 epoch on the frozen backbone, then every layer trains with rates spread 100x "
                "from the last layer to the first, one-cycle schedule, AdamW: fastai's Learner.fine_tune.",
                {"epochs": 5, "lr": 0.002, "optimizer": "adamw", "schedule": "one-cycle", "weight_decay": 0.01,
                 "head_epochs": 1, "lr_spread": 100.0}, unfreeze_factor=0.5),
    NamedRecipe("lp-ft", "LP-FT (linear probe, then finetune)",
                "The head is first fitted to convergence on the frozen features (a linear probe), then every layer "
                "is finetuned from it at a small rate: Kumar et al., ICLR 2022.",
                {"epochs": 5, "lr": 0.00001, "optimizer": "adamw", "schedule": "cosine"}, probe=True,
                fixed_statistics=True),
)}


def get_recipe(name: str) -> NamedRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"Unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}.") from None


MAX_LR = 100.0  # far beyond any useful rate; SGD fails outright once lr passes float32's range
COMPILE_CHOICES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """A run's settings. Defaults are the tutorial's."""

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
    fast: bool = True  # the fast paths (core.strategy, core.loaders); False runs the tutorial's loop as it is
    cached_views: int = 3  # frozen: augmented views per training picture whose backbone features are cached
    compile: str = "auto"  # torch.compile of the training steps: "auto" (where it pays), "on" or "off"
    recipe: str = "tutorial"  # a named recipe (core.recipes): its defaults fill the settings below not given
    optimizer: str = "sgd"  # or "adamw"
    schedule: str = "step"  # StepLR each epoch; or "one-cycle", "cosine" (with warm-up), stepped each batch
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    head_epochs: int = 0  # epochs in which the new head trains alone on the frozen backbone, before the rest
    lr_spread: float = 1.0  # the last layer's rate over the first's (discriminative rates); 1: one rate

    def __post_init__(self) -> None:
        get_backbone(self.backbone)
        get_scenario(self.scenario)
        get_recipe(self.recipe)
        for name in ("epochs", "batch_size", "step_size", "cached_views", "head_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number (got {value!r}).")
            if value < (0 if name == "head_epochs" else 1):
                raise ConfigError(f"{name} must be at least 1 (got {value}).")
        for name in ("seed", "workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name} must be a whole number, at least 0 (got {value!r}).")
        for name in ("lr", "momentum", "gamma", "weight_decay", "label_smoothing", "lr_spread"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number (got {value!r}).")
        if not 0 < self.lr <= MAX_LR:
            raise ConfigError(f"lr must be positive and at most {MAX_LR:g} (got {self.lr!r}).")
        if not 0 <= self.momentum < 1 or not 0 < self.gamma <= 1:
            raise ConfigError("momentum must be in [0, 1) and gamma in (0, 1].")
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_CHOICES)} (got {self.compile!r}).")
        self._check_recipe()

    def _check_recipe(self) -> None:
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)} and schedule one of "
                              f"{', '.join(SCHEDULES)} (got {self.optimizer!r} and {self.schedule!r}).")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1 or self.lr_spread < 1:
            raise ConfigError("weight_decay must be at least 0, label_smoothing in [0, 1) and lr_spread at least 1 "
                              "(1: every layer at the same rate).")
        recipe, scenario = get_recipe(self.recipe), get_scenario(self.scenario)
        unfreezes = recipe.probe or self.head_epochs > 0
        if (unfreezes or self.lr_spread > 1) and not scenario.train_backbone:
            what = (f"The {recipe.name} recipe trains the backbone after its {'probe' if recipe.probe else 'head'}"
                    if unfreezes else "Rates spread over layer groups (lr_spread) need layers to spread them over")
            raise ConfigError(f"{what}, so it needs a scenario that trains the backbone (finetune or scratch); "
                              f"{self.scenario} trains only the new last layer. Choose the finetune scenario, or the "
                              "tutorial recipe without head epochs and lr spread.")
        if unfreezes and not get_backbone(self.backbone).pooled_head:
            raise ConfigError(f"The {recipe.name} recipe trains {self.backbone}'s head alone first, on the backbone's "
                              "pooled features; its head is a convolution followed by pooling, not a layer on pooled "
                              "features. Choose the tutorial recipe without head epochs, or another backbone.")
        if self.head_epochs and (recipe.probe or self.head_epochs >= self.epochs):
            raise ConfigError(f"head_epochs ({self.head_epochs}) must be fewer than epochs ({self.epochs}), so that "
                              "the backbone trains after them" + (", and the lp-ft recipe has its probe instead"
                                                                  if recipe.probe else "") + ".")
        if unfreezes and not self.fast:
            raise ConfigError(f"The tutorial's loop runs recipes of one phase; the {recipe.name} recipe trains the "
                              "head alone first on the frozen backbone's features. Leave out the tutorial's loop.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Mapping[str, object], **chosen) -> TrainConfig:
        """The one place where a caller's settings become a run's: the command line's arguments, a page's form or
        a job's request, by name (other names are ignored; a name not given, or given as None, keeps the named
        recipe's value, else the tutorial's), then `chosen` (the scenario, the seed...). Checked as any TrainConfig
        is."""
        names = {item.name for item in fields(cls)}
        given = {name: value for name, value in settings.items() if name in names and value is not None}
        given.update((name, value) for name, value in chosen.items() if name in names)
        named = get_recipe(str(given.get("recipe", cls.recipe))).settings
        return cls(**{**named, **given})
