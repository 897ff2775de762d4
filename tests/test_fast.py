"""The fast paths give what the tutorial's pipeline gives: decoded-once pictures, cached frozen features."""
import json
import shutil
from pathlib import Path

import psutil
import pytest
import torch
from PIL import Image
from torch import nn

from core import decoded, loaders
from core.data import scan_dataset
from core.device import to_input
from core.errors import TrainingCancelled
from core.feature_cache import head_of
from core.images import open_image
from core.loaders import LoaderSettings, disk_loaders
from core.loop import evaluate
from core.models import build_model
from core.presets import EVAL_TRANSFORM, IMAGENET_STD, TRAIN_TRANSFORM
from core.runs import read_run, save_run
from core.strategy import Strategy
from core.train import TrainConfig, Trainer, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def scan(tiny_dataset):
    return scan_dataset(tiny_dataset)


def config(**overrides) -> TrainConfig:
    values = dict(backbone="mobilenet_v2", scenario="frozen", epochs=2, device="cpu", lr=0.01)
    return TrainConfig(**{**values, **overrides})


def test_decoded_validation_crops_are_exactly_the_tutorials(scan):
    for path, _ in scan.samples["val"]:
        expected = EVAL_TRANSFORM(open_image(path))
        assert torch.equal(to_input(decoded.decode_eval(path)[None], CPU)[0], expected)


def crops(path, seed: int):
    torch.manual_seed(seed)
    expected = TRAIN_TRANSFORM(open_image(path))
    torch.manual_seed(seed)
    return to_input(decoded.augment(*decoded.decode(path))[None], CPU)[0], expected


def test_decoded_training_crops_match_the_tutorials_for_the_same_seed(scan):
    for index, (path, _) in enumerate(scan.samples["train"]):
        crop, expected = crops(path, index)
        # the same crop and flip; the resize differs from Pillow's by at most one level of 255
        assert (crop - expected).abs().max() <= 1.01 / 255 / min(IMAGENET_STD)


def test_large_pictures_are_shrunk_but_crops_keep_their_detail(tmp_path):
    # a textured 2000 x 1400 picture: a crop that lost detail, or fell elsewhere, would differ by far more
    noise = torch.rand(1, 3, 350, 500, generator=torch.Generator().manual_seed(0)) * 255
    pixels = nn.functional.interpolate(noise, size=(1400, 2000), mode="bilinear").round().clamp(0, 255)
    Image.fromarray(pixels[0].permute(1, 2, 0).to(torch.uint8).numpy()).save(tmp_path / "big.png")
    Image.new("RGB", (300, 200), "red").save(tmp_path / "small.png")
    picture, size = decoded.decode(tmp_path / "big.png")
    assert decoded.max_short_side(TRAIN_TRANSFORM) == 915 and picture.shape == (3, 915, 1307) and size == (1400, 2000)
    assert decoded.decode(tmp_path / "small.png")[0].shape == (3, 200, 300)
    for seed in range(20):
        crop, expected = crops(tmp_path / "big.png", seed)
        # measured: at most 0.12 (sub-pixel placement); a picture kept at 256 pixels gives 0.19 to 0.47
        assert (crop - expected).abs().mean() < 0.15


@pytest.mark.parametrize("backbone, head", [("mobilenet_v2", "classifier"), ("resnet18", "fc")])
def test_cached_features_are_what_the_backbone_gives_the_head(scan, random_weights_dir, backbone, head):
    built = build_model(backbone, "frozen", 2, random_weights_dir)
    assert head_of(built)[2] is built.model.get_submodule(head)
    features = Trainer(config(backbone=backbone, cached_views=3, seed=0)).cache_features(scan, built)
    train_set, val_set = features.train, features.evaluation["val"]
    assert train_set.tensors[0].shape[:2] == (16, 3) and not torch.equal(*train_set.tensors[0][:, :2].unbind(1))
    model = built.model.eval()
    inputs = torch.stack([EVAL_TRANSFORM(open_image(path)) for path, _ in scan.samples["val"]])
    with torch.no_grad():
        logits = model(inputs)
        from_features = head_of(built)[2](val_set.tensors[0])
    assert torch.allclose(from_features, logits, rtol=1e-3, atol=1e-4)
    assert val_set.tensors[1].tolist() == [label for _, label in scan.samples["val"]]


def test_streamed_views_are_the_crops_of_passes_over_pictures_kept_in_memory(scan):
    samples = scan.samples["train"]
    torch.manual_seed(5)
    kept = decoded.InMemoryData(scan).train
    torch.manual_seed(5)
    expected = torch.stack([torch.stack([kept[i][0] for i in range(len(samples))]) for _ in range(3)], dim=1)
    torch.manual_seed(5)
    streamed = torch.cat(list(decoded.view_batches(samples, list(range(len(samples))), 3, 5)))
    assert torch.equal(streamed, expected.flatten(0, 1))  # picture after picture, its 3 views together
    every_other = torch.cat(list(decoded.eval_batches(scan.samples["val"], [1, 3], 4)))
    assert torch.equal(every_other, torch.stack([decoded.decode_eval(scan.samples["val"][i][0]) for i in (1, 3)]))


def test_frozen_trains_the_head_on_cached_features_and_reports_each_phase(scan, random_weights_dir):
    calls = []
    cfg = config(cached_views=2)
    result = train(cfg, scan, random_weights_dir, on_batch=calls.append)
    phases = [c.phase for c in calls]
    assert phases[: phases.index("train")] == ["features"] * (2 * 4 + 2)
    assert phases.count("train") == 2 * 4 and phases.count("val") == 2 * 2
    assert len(calls) == Trainer(cfg).planned_batches(scan)
    assert [(c.epoch, c.batch, c.batches) for c in calls if c.phase == "features"] == [(0, b, 10) for b in range(1, 11)]
    check = evaluate(result.model, disk_loaders(scan, LoaderSettings(4, workers=0))["val"],
                     Strategy.decide("cpu", fast=False))
    assert check.acc == result.best_val_acc and check.predictions == result.best_eval.predictions


def test_the_fast_and_the_tutorial_loop_report_the_same_progress_for_finetune(scan, random_weights_dir):
    counts = []
    for fast_paths in (True, False):
        calls = []
        cfg = config(scenario="finetune", fast=fast_paths, workers=0)
        train(cfg, scan, random_weights_dir, on_batch=calls.append)
        counts.append([(c.epoch, c.phase, c.batch, c.batches) for c in calls])
        assert len(calls) == Trainer(cfg).planned_batches(scan)
    assert counts[0] == counts[1]


def test_cancelling_while_features_are_computed_saves_an_empty_cancelled_run(scan, random_weights_dir, tmp_path):
    def cancel(progress):
        if progress.phase == "features" and progress.batch == 3:
            raise TrainingCancelled

    result = train(config(), scan, random_weights_dir, on_batch=cancel)
    assert result.status == "cancelled" and result.history == [] and result.best_epoch is None
    record = read_run(save_run(result, scan, tmp_path).path)
    assert record.status == "cancelled" and record.val_predictions is None


def test_a_seed_makes_a_cached_frozen_run_repeatable(scan, random_weights_dir):
    first = train(config(seed=3), scan, random_weights_dir)
    second = train(config(seed=3), scan, random_weights_dir)
    assert [(e.train_loss, e.val_loss) for e in first.history] == [(e.train_loss, e.val_loss) for e in second.history]


def test_pictures_too_large_for_memory_are_read_from_disk_and_the_run_says_so(scan, random_weights_dir, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("STUDIO_MEMORY_BUDGET_MB", "0")
    monkeypatch.setattr(loaders, "InMemoryData", lambda *a, **k: pytest.fail("decoded into memory"))
    finetune = train(config(scenario="finetune", workers=0), scan, random_weights_dir)
    assert finetune.status == "completed" and len(finetune.history) == 2
    saved = read_run(save_run(finetune, scan, tmp_path).path)
    assert saved.placement.pictures.startswith("read from disk every epoch")
    assert "over the budget of 0.0 GiB (STUDIO_MEMORY_BUDGET_MB)" in "\n".join(saved.placement.describe())
    frozen = train(config(scenario="frozen", workers=0), scan, random_weights_dir)  # no pictures kept: no budget
    assert frozen.status == "completed" and "then dropped" in frozen.placement.pictures


def test_the_budget_is_a_share_of_the_memory_available(scan, random_weights_dir, monkeypatch):
    monkeypatch.delenv("STUDIO_MEMORY_BUDGET_MB", raising=False)
    budget = loaders.memory_budget()
    assert budget.bytes == pytest.approx(psutil.virtual_memory().available / 2, rel=0.2)
    assert "50% of the" in budget.text() and "GiB available" in budget.text()
    result = train(config(scenario="finetune", workers=0), scan, random_weights_dir)
    assert result.placement.pictures.startswith("decoded once into memory") and "GiB available" in \
        result.placement.pictures


def test_runs_saved_before_the_fast_paths_still_load(tiny_run, tmp_path):
    old = Path(shutil.copytree(tiny_run.path, tmp_path / "old-run"))
    data = json.loads((old / "run.json").read_text())
    for key in ("fast", "cached_views"):
        data["config"].pop(key)
    (old / "run.json").write_text(json.dumps(data))
    assert read_run(old).config == TrainConfig(**data["config"])


def test_cached_views_must_be_positive():
    with pytest.raises(ValueError, match="cached_views"):
        config(cached_views=0)
