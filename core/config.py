"""A run's settings, in one small dataclass: what the caller (the command line, a page's form, a job, an experiment's
cell) builds once and hands down.

They hold three things, each read by one part: the recipe (how the run learns: core.recipes.Recipe.of), where and how
it trains (the device and the fast paths: core.strategy), and how its data is loaded (the workers, the cached views:
core.loaders). Defaults are the tutorial's.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from core.errors import ConfigError
from core.models import get_backbone, get_scenario

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
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_CHOICES)} (got {self.compile!r}).")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Mapping[str, object], **chosen) -> TrainConfig:
        """The one place where a caller's settings become a run's: the command line's arguments, a page's form or
        a job's request, by name (other names are ignored, a name not given keeps the tutorial's value), then
        `chosen` (the scenario, the seed...). Checked as any TrainConfig is."""
        names = {item.name for item in fields(cls)}
        return cls(**{name: value for name, value in {**settings, **chosen}.items() if name in names})
