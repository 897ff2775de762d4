"""The recipe as an object (core.recipes): what the loop asks of it, and which settings define it."""
import inspect

import torch
from torch import nn

from core.recipes import Recipe, recipe_settings
from core.train import TrainConfig, fit


def test_the_tutorial_recipe_is_sgd_with_momentum_and_steplr_over_one_phase():
    recipe = Recipe.of(TrainConfig(epochs=12, lr=0.01, momentum=0.8, step_size=5, gamma=0.5))
    weight = nn.Parameter(torch.zeros(2))
    optimizer = recipe.optimizer([weight])
    assert isinstance(optimizer, torch.optim.SGD) and isinstance(recipe.loss(), nn.CrossEntropyLoss)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["momentum"] == 0.8
    schedule = recipe.schedule(optimizer)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == [0.01] * 5 + [0.005] * 5 + [0.0025] * 2
    assert [(phase.trains, phase.epochs) for phase in recipe.phases] == [("scenario", 12)]


def test_the_loop_names_no_optimiser_schedule_or_loss_of_its_own():
    source = inspect.getsource(fit)
    assert not [name for name in ("SGD", "Adam", "StepLR", "OneCycle", "CrossEntropy", "torch.optim") if name in source]


def test_one_function_says_which_settings_are_the_recipe():
    base = TrainConfig(backbone="mobilenet_v2", scenario="frozen", epochs=3)
    luck_and_place = TrainConfig(backbone="mobilenet_v2", scenario="frozen", epochs=3, seed=7, device="cpu", workers=2)
    assert recipe_settings(base) == recipe_settings(luck_and_place)  # repeats of one recipe
    assert recipe_settings(base) != recipe_settings(TrainConfig(backbone="mobilenet_v2", scenario="frozen", epochs=4))
    assert recipe_settings(base)["scenario"] == "frozen" and "scenario" not in recipe_settings(base, scenario=False)
    assert {"seed", "device", "workers"}.isdisjoint(recipe_settings(base))
