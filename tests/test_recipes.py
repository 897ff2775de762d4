"""The recipe as an object (core.recipes): what the loop asks of it, and which settings define it."""
import inspect

import torch
from torch import nn

from core.recipes import Recipe, recipe_settings
from core.train import TrainConfig, fit


def test_the_tutorial_recipe_is_sgd_with_momentum_and_steplr_over_one_phase():
    recipe = Recipe.of(TrainConfig(epochs=12, lr=0.01, momentum=0.8, step_size=5, gamma=0.5))
    weight, phase = nn.Parameter(torch.zeros(2)), recipe.phases[0]
    optimizer = recipe.optimizer(recipe.groups([weight], [], phase), phase)
    assert isinstance(optimizer, torch.optim.SGD) and isinstance(recipe.loss(), nn.CrossEntropyLoss)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["momentum"] == 0.8
    schedule, per_batch = recipe.schedule(optimizer, phase, 10)
    assert not per_batch
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == [0.01] * 5 + [0.005] * 5 + [0.0025] * 2
    assert [(phase.trains, phase.epochs) for phase in recipe.phases] == [("scenario", 12)]
    assert recipe.loss().label_smoothing == 0


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


# ---------------------------------------------------------------- the named recipes

import pytest  # noqa: E402

from core.data import scan_dataset  # noqa: E402
from core.errors import ConfigError  # noqa: E402
from core.lr_find import NoRateFound, find_learning_rate  # noqa: E402
from core.train import Callbacks, Trainer, train  # noqa: E402


def tiny_config(**settings) -> TrainConfig:
    return TrainConfig.from_settings({"backbone": "mobilenet_v2", "epochs": 2, "seed": 0, "device": "cpu",
                                      "workers": 0, "compile": "off", **settings})


def test_a_named_recipe_brings_its_defaults_and_each_knob_can_be_set_on_its_own():
    fine_tune = TrainConfig.from_settings({"recipe": "fine-tune"})
    assert (fine_tune.optimizer, fine_tune.schedule, fine_tune.weight_decay, fine_tune.head_epochs,
            fine_tune.lr_spread, fine_tune.lr, fine_tune.epochs) == ("adamw", "one-cycle", 0.01, 1, 100.0, 0.002, 5)
    assert TrainConfig.from_settings({"recipe": "fine-tune", "lr_spread": None, "label_smoothing": 0.1}
                                     ).lr_spread == 100.0
    tutorial = TrainConfig.from_settings({"optimizer": "adamw", "label_smoothing": 0.1})
    assert (tutorial.recipe, tutorial.optimizer, tutorial.schedule, tutorial.epochs) == ("tutorial", "adamw", "step",
                                                                                         25)
    assert TrainConfig.from_settings({}) == TrainConfig()


@pytest.mark.parametrize("settings", [{"recipe": "fine-tune", "scenario": "frozen"},
                                      {"recipe": "lp-ft", "scenario": "frozen-tutorial"},
                                      {"head_epochs": 2, "scenario": "frozen"},
                                      {"lr_spread": 10.0, "scenario": "frozen"}])
def test_a_recipe_that_unfreezes_is_refused_with_a_scenario_that_does_not_train_the_backbone(settings):
    with pytest.raises(ConfigError, match="needs a scenario that trains the backbone"):
        TrainConfig.from_settings(settings)


def test_head_epochs_must_leave_epochs_for_the_backbone():
    with pytest.raises(ConfigError, match="fewer than epochs"):
        TrainConfig.from_settings({"recipe": "fine-tune", "epochs": 1})


def test_label_smoothing_gives_torchs_own_smoothed_cross_entropy():
    logits, labels = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 3
    smoothed = Recipe.of(TrainConfig(label_smoothing=0.2)).loss()(logits, labels)
    assert torch.equal(smoothed, nn.CrossEntropyLoss(label_smoothing=0.2)(logits, labels))
    assert not torch.equal(smoothed, nn.CrossEntropyLoss()(logits, labels))


def one_cycle_rates(config: TrainConfig, phase_index: int, batches: int):
    """Each step's rate per group and beta1 for a small body-and-head model under the phase's one-cycle schedule."""
    recipe = Recipe.of(config)
    phase = recipe.phases[phase_index]
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    head = list(model[3].parameters())
    groups = recipe.groups(list(model.parameters()), head, phase)
    optimizer = recipe.optimizer(groups, phase)
    schedule, per_batch = recipe.schedule(optimizer, phase, batches)
    assert per_batch
    steps = []
    for _ in range(phase.epochs * batches):
        steps.append(([g["lr"] for g in optimizer.param_groups], optimizer.param_groups[0]["betas"][0]))
        optimizer.step()
        schedule.step()
    return [group.name for group in groups], steps


def test_after_the_unfreeze_each_layer_groups_rate_follows_fastais_fine_tune():
    config = TrainConfig.from_settings({"recipe": "fine-tune", "epochs": 5})  # 1 head epoch, then 4
    names, steps = one_cycle_rates(config, 1, batches=10)
    assert names == ["backbone, first half", "backbone, second half", "head"]
    top = config.lr / 2  # fastai halves the base rate when it unfreezes
    peaks = [top / 100, top / 10, top]  # even_mults(top / lr_mult, top, 3), lr_mult = 100
    for rates, _ in steps:  # the groups' ratios hold at every step
        assert rates[1] / rates[0] == pytest.approx(10, rel=1e-9) and rates[2] / rates[1] == pytest.approx(10, rel=1e-9)
    assert steps[0][0] == pytest.approx([peak / 5 for peak in peaks], rel=1e-9)  # fine_tune's div = 5
    peak_step = max(range(len(steps)), key=lambda i: steps[i][0][2])
    assert peak_step == 0.3 * 40 - 1  # pct_start 0.3 of 40 steps
    assert steps[peak_step][0] == pytest.approx(peaks, rel=1e-9) and steps[peak_step][1] == pytest.approx(0.85)
    assert steps[-1][0] == pytest.approx([peak / 1e5 for peak in peaks], rel=1e-6)  # div_final = 1e5
    assert steps[0][1] == pytest.approx(0.95) and steps[-1][1] == pytest.approx(0.95)


def test_fine_tunes_head_epoch_rises_over_99_percent_of_its_steps():
    config = TrainConfig.from_settings({"recipe": "fine-tune", "epochs": 5})
    names, steps = one_cycle_rates(config, 0, batches=50)
    assert names == ["all"]  # the head phase's model here has a body: one rate for all, as fastai's slice(base_lr)
    assert steps[0][0][0] == pytest.approx(config.lr / 25, rel=1e-9)
    assert abs(max(range(50), key=lambda i: steps[i][0][0]) - (0.99 * 50 - 1)) <= 0.5  # the rise's last step


def capture_built(trainer: Trainer) -> dict:
    """The trainer's model as it is built, with a copy of its first state."""
    seen, build = {}, trainer.build

    def building(classes: int):
        built = build(classes)
        seen["built"] = built
        seen["start"] = {key: value.clone() for key, value in built.model.state_dict().items()}
        return built

    trainer.build = building
    return seen


def test_in_fine_tunes_head_epoch_the_backbone_stays_bit_identical_while_the_head_changes(tiny_dataset,
                                                                                          random_weights_dir):
    after = []
    config = tiny_config(recipe="fine-tune", epochs=2)
    trainer = Trainer(config, random_weights_dir, Callbacks(on_epoch=lambda stats: after.append(
        {key: value.clone() for key, value in seen["built"].model.state_dict().items()})))
    seen = capture_built(trainer)
    result = trainer.train(scan_dataset(tiny_dataset))
    head = "classifier.1."
    start, state = seen["start"], after[0]
    backbone = [key for key in start if not key.startswith(head)]
    assert any("running_mean" in key for key in backbone)
    assert all(torch.equal(start[key], state[key]) for key in backbone)
    assert not torch.equal(start[head + "weight"], state[head + "weight"])
    assert [(phase.name, phase.epochs) for phase in result.phases] == [("head", 1), ("unfrozen", 1)]
    assert [epoch.phase for epoch in result.history] == ["head", "unfrozen"]
    assert set(result.history[1].rates) == {"backbone, first half", "backbone, second half", "head"}
    assert not all(torch.equal(start[key], after[1][key]) for key in backbone)  # then the backbone trained


def test_lp_fts_finetuning_starts_from_exactly_the_head_its_probe_ended_with(tiny_dataset, random_weights_dir,
                                                                            monkeypatch):
    import core.loop
    heads = []

    def probe(head, features, labels):
        iterations = fit_probe(head, features, labels)
        heads.append(("probe", head.weight.detach().clone(), head.bias.detach().clone()))
        return iterations

    def first_epoch(model, *args, **kwargs):
        linear = model.get_submodule("fc")
        heads.append(("finetune", linear.weight.detach().clone(), linear.bias.detach().clone()))
        return train_one_epoch(model, *args, **kwargs)

    fit_probe, train_one_epoch = core.loop.fit_probe, core.loop.train_one_epoch
    monkeypatch.setattr(core.loop, "fit_probe", probe)
    monkeypatch.setattr(core.loop, "train_one_epoch", first_epoch)
    # ResNet-18: the random MobileNetV2's features are about 1e-9, too small for a probe to learn from
    result = train(tiny_config(recipe="lp-ft", epochs=1, backbone="resnet18"), scan_dataset(tiny_dataset),
                   random_weights_dir)
    (probed, weight, bias), (tuned, start_weight, start_bias) = heads
    assert (probed, tuned) == ("probe", "finetune")
    assert torch.equal(weight, start_weight) and torch.equal(bias, start_bias)
    assert weight.abs().sum() > 0
    assert [phase.name for phase in result.phases] == ["probe", "finetune"]
    assert "converged in" in result.phases[0].outcome


def test_the_learning_rate_finder_leaves_the_model_as_it_was(tiny_dataset, random_weights_dir, monkeypatch):
    import core.lr_find
    seen = {}
    sweep = core.lr_find.sweep

    def watched(stage, built, *args):
        before = {key: value.clone() for key, value in built.model.state_dict().items()}
        outcome = sweep(stage, built, *args)
        seen["same"] = all(torch.equal(before[key], value) for key, value in built.model.state_dict().items())
        seen["buffers"] = any("running_var" in key for key in before)
        return outcome

    monkeypatch.setattr(core.lr_find, "sweep", watched)
    curve = find_learning_rate(tiny_config(scenario="finetune"), scan_dataset(tiny_dataset), random_weights_dir,
                               steps=20)
    assert seen == {"same": True, "buffers": True}
    assert len(curve.rates) == len(curve.losses) and curve.rates == sorted(curve.rates)


def test_the_learning_rate_finders_suggestion_trains_an_easy_set(tiny_dataset, random_weights_dir):
    scan = scan_dataset(tiny_dataset)
    curve = find_learning_rate(tiny_config(scenario="frozen", backbone="resnet18"), scan, random_weights_dir)
    assert 1e-7 < curve.suggestion < 10
    trained = train(tiny_config(scenario="frozen", backbone="resnet18", lr=curve.suggestion, epochs=5), scan,
                    random_weights_dir)
    assert trained.best_val_acc == 1.0


def test_a_rate_at_which_the_loss_explodes_from_the_start_gives_a_message_not_a_number(tiny_dataset,
                                                                                       random_weights_dir):
    with pytest.raises(NoRateFound, match="did not come down at any rate"):
        find_learning_rate(tiny_config(scenario="frozen", backbone="resnet18"), scan_dataset(tiny_dataset),
                           random_weights_dir, start=1e4, end=1e8)
