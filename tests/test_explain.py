"""Grad-CAM heat maps: their shape and range, and that a trained model looks where the evidence is."""
import numpy as np
import pytest
from PIL import Image

from core.data import scan_dataset
from core.explain import grad_cam
from core.models import build_architecture
from core.train import TrainConfig, train

SIZE = 128
OBJECT = (8, 8, 64, 64)  # after Resize(256) and CenterCrop(224): the top-left quarter of what the model sees


def object_picture(color, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 166, size=(SIZE, SIZE, 1)).repeat(3, axis=2).astype(np.uint8)
    left, top, right, bottom = OBJECT
    pixels[top:bottom, left:right] = color
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def pointing_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pointing")
    for split, count in (("train", 24), ("val", 6)):
        for name, color in (("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220))):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                seed = index + (1000 if split == "val" else 0)
                object_picture(color, seed=seed).save(root / split / name / f"{index}.png")
    return root


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_the_heat_map_is_a_crop_sized_map_in_zero_one(backbone):
    model = build_architecture(backbone, 3)
    heat_map = grad_cam(model, object_picture((220, 30, 30), 0), target=2)
    assert heat_map.heat.shape == (224, 224) and heat_map.target == 2
    assert heat_map.heat.min() >= 0 and heat_map.heat.max() <= 1
    assert heat_map.overlay().size == (224, 224) and heat_map.picture.size == (224, 224)


def test_a_trained_model_looks_at_the_object_that_decides_the_class(pointing_dataset):
    scan = scan_dataset(pointing_dataset)
    config = TrainConfig(backbone="resnet18", scenario="scratch", epochs=4, batch_size=8, lr=0.01, workers=0, seed=0)
    result = train(config, scan)
    assert result.best_val_acc == 1.0, result.history
    # Where the object lies after Resize(256) and CenterCrop(224) of a 128-pixel picture.
    scale, offset = 256 / SIZE, (256 - 224) / 2
    left, top, right, bottom = (int(v * scale - offset) for v in OBJECT)
    masses = []
    for path, _ in scan.samples["val"]:
        heat = grad_cam(result.model, path).heat
        masses.append(heat[top:bottom, left:right].sum() / heat.sum())
    region_share = (right - left) * (bottom - top) / 224**2
    assert region_share == 0.25
    assert np.median(masses) > 0.5, masses
