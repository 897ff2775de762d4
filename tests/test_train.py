"""The training loop on generated pictures: history, best weights, frozen layers, callbacks, cancellation."""
import sys

import pytest
import torch

from core.data import scan_dataset
from core.device import pick_device
from core.errors import ConfigError, StudioError, TrainingCancelled
from core.loaders import LoaderSettings, disk_loaders
from core.loop import evaluate
from core.models import build_model
from core.strategy import Strategy
from core.train import TrainConfig, train


@pytest.fixture(scope="module")
def scan(tiny_dataset):
    return scan_dataset(tiny_dataset)


def config(**overrides) -> TrainConfig:
    values = dict(backbone="mobilenet_v2", scenario="finetune", epochs=2, workers=0, device="cpu")
    return TrainConfig(**{**values, **overrides})


def test_history_and_progress_follow_the_recipe(scan, random_weights_dir):
    batches, epochs = [], []
    result = train(config(epochs=3), scan, random_weights_dir, on_batch=batches.append, on_epoch=epochs.append)
    assert result.status == "completed" and len(result.history) == 3 and epochs == result.history
    assert [b.phase for b in batches].count("train") == 3 * 4 and [b.phase for b in batches].count("val") == 3 * 2
    assert [e.epoch for e in result.history] == [1, 2, 3]
    assert all(0 <= e.train_acc <= 1 and 0 <= e.val_acc <= 1 and e.seconds > 0 for e in result.history)
    assert result.best_val_acc == max(e.val_acc for e in result.history)
    assert result.final == result.history[-1]


def test_step_lr_decays_the_rate_as_configured(scan, random_weights_dir):
    result = train(config(scenario="frozen", epochs=3, step_size=2, gamma=0.1, lr=0.01), scan, random_weights_dir)
    assert [e.lr for e in result.history] == pytest.approx([0.01, 0.01, 0.001])


def test_frozen_changes_only_the_head(scan, random_weights_dir):
    before = build_model("mobilenet_v2", "frozen", 2, random_weights_dir).model.state_dict()
    result = train(config(scenario="frozen"), scan, random_weights_dir)
    after = result.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.1.weight", "classifier.1.bias"}


def test_a_head_trained_on_cached_features_keeps_its_dropout(scan, random_weights_dir, monkeypatch):
    # MobileNetV2's head is classifier = (Dropout, Linear): on cached features it trains alone, and its dropout with it,
    # as in the tutorial's loop, where a frozen run's results would otherwise change.
    modes = []
    forward = torch.nn.Dropout.forward
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: modes.append(self.training) or forward(self, x))
    result = train(config(scenario="frozen", epochs=1), scan, random_weights_dir)
    assert result.status == "completed" and True in modes


def test_frozen_as_in_the_tutorial_updates_batchnorm_statistics(scan, random_weights_dir):
    before = build_model("mobilenet_v2", "frozen-tutorial", 2, random_weights_dir).model.state_dict()
    after = train(config(scenario="frozen-tutorial"), scan, random_weights_dir).model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "features.0.1.running_mean" in changed
    assert not any(k.endswith("conv.weight") or k == "features.0.0.weight" for k in changed)


def test_cancelling_keeps_the_best_epoch_so_far(scan, random_weights_dir):
    def cancel_in_epoch_two(progress):
        if progress.epoch == 2 and progress.batch == 2:
            raise TrainingCancelled

    result = train(config(epochs=5, lr=0.05), scan, random_weights_dir, on_batch=cancel_in_epoch_two)
    assert result.status == "cancelled" and len(result.history) == 1 and result.best_epoch == 1
    loaders = disk_loaders(scan, LoaderSettings(4, workers=0))
    check = evaluate(result.model, loaders["val"], Strategy.decide("cpu", fast=False))
    assert check.acc == result.history[0].val_acc
    assert check.predictions == result.best_eval.predictions


def test_the_returned_model_holds_the_best_validation_weights(scan, random_weights_dir):
    result = train(config(epochs=3, lr=0.02), scan, random_weights_dir)
    loaders = disk_loaders(scan, LoaderSettings(4, workers=0))
    check = evaluate(result.model, loaders["val"], Strategy.decide("cpu", fast=False))
    assert check.acc == result.best_val_acc
    assert check.loss == pytest.approx(result.history[result.best_epoch - 1].val_loss, rel=1e-5)


def test_a_seed_makes_a_cpu_run_repeatable(scan, random_weights_dir):
    first = train(config(workers=2, seed=7), scan, random_weights_dir)
    second = train(config(workers=2, seed=7), scan, random_weights_dir)
    assert [(e.train_loss, e.val_loss) for e in first.history] == [(e.train_loss, e.val_loss) for e in second.history]


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("batch_size", 0), ("lr", -1.0), ("momentum", 1.5), ("backbone", "vgg"), ("scenario", "magic"),
    ("lr", float("nan")), ("lr", float("inf")), ("lr", 1e39), ("momentum", float("nan")), ("gamma", float("nan")),
    ("gamma", float("-inf")), ("epochs", 2.5), ("epochs", True), ("batch_size", "8"), ("seed", -1), ("workers", 1.0),
])
def test_bad_recipe_values_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        config(**{field: value})


def test_a_run_whose_loss_becomes_nan_stops_and_keeps_its_last_good_epoch(scan, random_weights_dir, monkeypatch):
    loop = sys.modules["core.loop"]
    real_train_one_epoch = loop.train_one_epoch
    epochs_run = []

    def train_one_epoch(model, *args, **kwargs):  # the weights blow up during epoch 2, as with a far too high lr
        epochs_run.append(1)
        if len(epochs_run) == 2:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("inf"))
        return real_train_one_epoch(model, *args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", train_one_epoch)
    result = train(config(scenario="frozen", epochs=4), scan, random_weights_dir)
    assert result.status == "diverged" and len(epochs_run) == 2
    assert [e.epoch for e in result.history] == [1] and result.best_epoch == 1
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values() if v.is_floating_point())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_says_what_to_do():
    with pytest.raises(StudioError, match="choose the device auto or cpu"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"
