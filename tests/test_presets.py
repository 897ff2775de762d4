"""The transform presets are the tutorial's transforms, with their parameters readable by name."""
import torch
from torchvision import transforms

from core.presets import EVAL_TRANSFORM, TRAIN_TRANSFORM, EvalPreset, TrainPreset
from tests.conftest import make_picture

# As the tutorial writes them (../shared/seed/transfer_learning_tutorial.md).
TUTORIAL = {
    "train": transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]),
    "val": transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]),
}


def test_the_training_preset_gives_the_tutorials_crops_for_the_same_seed():
    picture = make_picture("red", 0, size=300).resize((400, 300))
    for seed in range(20):
        torch.manual_seed(seed)
        expected = TUTORIAL["train"](picture)
        torch.manual_seed(seed)
        assert torch.equal(TRAIN_TRANSFORM(picture), expected)


def test_the_validation_preset_is_the_tutorials():
    picture = make_picture("blue", 1, size=300).resize((300, 500))
    assert torch.equal(EVAL_TRANSFORM(picture), TUTORIAL["val"](picture))
    assert EVAL_TRANSFORM.geometry(picture).size == (224, 224)


def test_the_parameters_are_named_and_drive_the_transforms():
    preset = TrainPreset(crop_size=96, scale=(0.5, 1.0), hflip_prob=0.0)
    assert (preset.crop_size, preset.scale, preset.ratio, preset.hflip_prob) == (96, (0.5, 1.0), (3 / 4, 4 / 3), 0.0)
    assert preset(make_picture("green", 2)).shape == (3, 96, 96)
    assert EvalPreset(resize_size=128, crop_size=112)(make_picture("green", 3)).shape == (3, 112, 112)
    assert (EVAL_TRANSFORM.resize_size, EVAL_TRANSFORM.crop_size) == (256, 224)
