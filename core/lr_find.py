"""A learning-rate finder (Smith 2015, as fastai's `lr_find` and Lightning's `Tuner.lr_find` run it): the rate rises
exponentially over about 100 training steps of what the recipe's last phase trains, the loss is smoothed, the sweep
stops once the loss explodes, and a rate is suggested from the longest valley of the curve (fastai's "valley").
Afterwards the model is exactly as it was, weights and buffers.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from core.data import DatasetScan
from core.device import one_cpu_thread
from core.errors import StudioError
from core.loop import Stage
from core.models import BuiltModel, set_training_mode
from core.recipes import Recipe
from core.strategy import Strategy
from core.train import TrainConfig, Trainer

START_RATE, END_RATE, STEPS = 1e-7, 10.0, 100
SMOOTHING = 0.98  # the loss's exponential moving average, debiased
EXPLODED = 4.0  # the sweep stops once the smoothed loss passes this many times its lowest so far

OnStep = Callable[[int, int], None]  # (steps done, steps): may raise TrainingCancelled


class NoRateFound(StudioError):
    """The loss did not come down at any rate of the sweep: there is no rate to suggest."""


@dataclass(frozen=True)
class RateCurve:
    """The rates tried (the highest layer group's) and the smoothed loss at each; the suggested rate; why it ended."""

    rates: list[float]
    losses: list[float]
    suggestion: float
    ended: str

    def table(self, rows: int = 12) -> list[tuple[str, str]]:
        """About `rows` points of the curve, evenly spread, with the suggestion's among them."""
        every = max(1, len(self.rates) // rows)
        picked = sorted({*range(0, len(self.rates), every), len(self.rates) - 1,
                         min(range(len(self.rates)), key=lambda i: abs(math.log(self.rates[i] / self.suggestion)))})
        return [(f"{self.rates[i]:.2e}", f"{self.losses[i]:.4f}") for i in picked]


def find_learning_rate(config: TrainConfig, scan: DatasetScan, weights: str | Path | None = None,
                       start: float = START_RATE, end: float = END_RATE, steps: int = STEPS,
                       on_step: OnStep | None = None) -> RateCurve:
    """Sweep the rate on `scan` for what `config`'s recipe trains in its last phase (the head alone on a frozen
    backbone's features, or the whole network on its pictures), and suggest one. Raises NoRateFound when the loss
    never comes down."""
    scan.raise_if_invalid()
    if not 0 < start < end:
        raise StudioError(f"The sweep's rates must rise: start {start:g}, end {end:g}.")
    trainer = Trainer(replace(config, cached_views=1), weights)  # one view per picture is enough to sweep
    built = trainer.build(len(scan.classes))
    stages, _ = trainer.stages(scan, built, phases=[trainer.recipe.phases[-1]], evaluated=False)
    stage = stages[0]
    with one_cpu_thread(trainer.strategy.device.type == "cpu" and stage.head_only):
        rates, losses, ended = sweep(stage, built, trainer.recipe, trainer.strategy, start, end, steps, on_step)
    return RateCurve(rates, losses, suggest(rates, losses, steps), ended)


def sweep(stage: Stage, built: BuiltModel, recipe: Recipe, strategy: Strategy, start: float, end: float, steps: int,
          on_step: OnStep | None = None) -> tuple[list[float], list[float], str]:
    """Train `stage`'s model one batch per rate, from `start` to `end` exponentially over `steps` steps (each layer
    group keeps its ratio to the highest), and return the rates, the smoothed losses and why it ended. The model's
    weights and buffers are put back as they were, whatever happens."""
    model, phase = stage.model, stage.phase
    saved = {key: value.detach().clone() for key, value in model.state_dict().items()}
    groups = recipe.groups(list(model.parameters()), stage.head, phase)
    optimizer = recipe.optimizer(groups, phase)
    ratios = [group["lr"] / optimizer.param_groups[-1]["lr"] for group in optimizer.param_groups]
    criterion = recipe.loss()
    rates, losses, average, lowest = [], [], 0.0, math.inf
    ended = f"reached {end:g}"
    try:
        set_training_mode(model, built.scenario, recipe.named.fixed_statistics, stage.head_only)
        for step, (inputs, labels) in enumerate(_endless(stage.loaders["train"], steps)):
            rate = start * (end / start) ** (step / max(steps - 1, 1))
            for settings, ratio in zip(optimizer.param_groups, ratios):
                settings["lr"] = rate * ratio
            optimizer.zero_grad(set_to_none=True)
            with strategy.compute.autocast():
                loss = criterion(model(strategy.compute.inputs(inputs)), labels.to(strategy.device))
            loss.backward()
            optimizer.step()
            value = loss.item()
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            if not math.isfinite(smoothed) or smoothed > EXPLODED * lowest:
                ended = f"the loss exploded at {rate:.2g}"
                break
            lowest = min(lowest, smoothed)
            rates.append(rate)
            losses.append(smoothed)
            if on_step:
                on_step(step + 1, steps)
    finally:
        model.load_state_dict(saved)
        model.eval()
    return rates, losses, ended


def suggest(rates: list[float], losses: list[float], steps: int = STEPS) -> float:
    """fastai's "valley": the longest stretch over which the loss keeps falling (its first tenth and last five
    points left out), and a rate two thirds of the way down it."""
    trimmed_rates, trimmed = rates[steps // 10:-5], losses[steps // 10:-5]
    count = len(trimmed)
    if count < 3 or min(trimmed) >= trimmed[0]:
        tried = f"{rates[0]:.0e} to {rates[-1]:.0e}" if rates else "the first rate"
        raise NoRateFound(f"The loss did not come down at any rate tried ({tried}): there is no rate to suggest. "
                          "Start the sweep lower, or check that the pictures' classes are right.")
    longest = [1] * count
    start = end = 0
    for i in range(1, count):
        for j in range(i):
            if trimmed[i] < trimmed[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return float(trimmed_rates[start + int(third) + int(third / 2)])


def _endless(loader, steps: int) -> Iterator:
    """`steps` batches of `loader`, going round it as often as needed."""
    done = 0
    while done < steps:
        for batch in loader:
            if done == steps:
                return
            done += 1
            yield batch
