"""How a run learns, its recipe: the loss, the optimiser, the learning-rate schedule and the phases (what trains, for
how many epochs). The training loop (core.train.fit) asks the recipe for each of them and names none itself.

The tutorial's recipe is the only one for now: cross-entropy, SGD with momentum, StepLR, one phase in which what
the scenario trains trains for every epoch. Which of a run's settings define its recipe is said once here
(`recipe_settings`): experiments key their cells on it and Compare groups a recipe's repeats by it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from core.config import TrainConfig

# A run's settings that are not its recipe: its luck (the seed) and where and how fast it ran.
NOT_RECIPE = ("seed", "device", "workers")


def recipe_settings(config: TrainConfig, scenario: bool = True) -> dict:
    """The settings that define how a run learns, by name: two runs that share them differ by their seed or by
    where they ran. Without `scenario`, the scenario is left out too (an experiment's grid varies it)."""
    left_out = NOT_RECIPE if scenario else (*NOT_RECIPE, "scenario")
    return {name: value for name, value in config.to_dict().items() if name not in left_out}


@dataclass(frozen=True)
class Phase:
    """A stretch of training: `epochs` epochs in which `trains` trains (here: what the scenario trains)."""

    trains: str
    epochs: int


@dataclass(frozen=True)
class Recipe:
    """The tutorial's recipe: cross-entropy, SGD with momentum, the rate multiplied by `gamma` every `step_size`
    epochs, one phase of `epochs` epochs."""

    name: str
    epochs: int
    lr: float
    momentum: float
    step_size: int
    gamma: float

    @classmethod
    def of(cls, config: TrainConfig) -> Recipe:
        return cls("tutorial", config.epochs, config.lr, config.momentum, config.step_size, config.gamma)

    @property
    def phases(self) -> list[Phase]:
        return [Phase("scenario", self.epochs)]

    def loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def optimizer(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum)

    def schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """Stepped once after each epoch."""
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.step_size, gamma=self.gamma)
