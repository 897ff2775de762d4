"""The backbone catalogue: torchvision's whole ImageNet registry, each backbone with its own preprocessing, its head
found and replaced, truly frozen when frozen, and a Grad-CAM that is never blank."""
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import models

from core.backbones import BACKBONES, Backbone, get_backbone, select
from core.cli import main
from core.data import scan_dataset
from core.errors import ConfigError
from core.explain import grad_cam
from core.export import export_run
from core.models import head_layer, head_path, set_training_mode
from core.predict import load_predictor
from core.runs import find_run, save_run
from core.train import TrainConfig, train
from tests.conftest import make_image_folder

# One of each family, the smallest, built with random weights (no real ImageNet file is here but MobileNetV2's).
FAMILIES = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s", "convnext_tiny",
            "regnet_x_400mf", "densenet121", "shufflenet_v2_x0_5", "mnasnet0_5", "squeezenet1_1", "vgg11", "vit_b_32",
            "swin_t", "maxvit_t", "googlenet", "inception_v3", "alexnet"]


def test_the_catalogue_is_every_torchvision_classifier_with_imagenet_weights():
    expected = {name for name in models.list_models(module=models)
                if any(len(w.meta.get("categories") or ()) == 1000 for w in models.get_model_weights(name))}
    assert set(BACKBONES) == expected and len(BACKBONES) >= 80
    assert {get_backbone(name).family for name in FAMILIES} == {backbone.family for backbone in BACKBONES.values()}
    assert [b.name for b in select(family="vit", max_params=100)] == ["vit_b_16", "vit_b_32"]


def test_each_backbone_brings_its_weights_preprocessing():
    b3 = get_backbone("efficientnet_b3").preprocessing
    assert (b3.resize, b3.crop, b3.interpolation) == (320, 300, "bicubic")
    tutorial = get_backbone("resnet18").preprocessing
    assert (tutorial.resize, tutorial.crop, tutorial.interpolation) == (256, 224, "bilinear")
    assert get_backbone("mobilenet_v2").imagenet_weights == models.MobileNet_V2_Weights.IMAGENET1K_V1


@pytest.fixture(scope="module")
def family_weights(tmp_path_factory):
    """Random ImageNet-shaped weights for each family's representative, saved as BACKBONE.pth."""
    folder = tmp_path_factory.mktemp("family-weights")
    for name in FAMILIES:
        torch.manual_seed(0)
        torch.save(get_backbone(name).build().state_dict(), folder / f"{name}.pth")
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Two classes, two training pictures and one validation picture each: the least a run of both scenarios
    takes."""
    return scan_dataset(make_image_folder(tmp_path_factory.mktemp("families") / "colours", classes=("blue", "red"),
                                          train_per_class=2, val_per_class=1))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_trains_predicts_explains_exports_and_reloads(name, family_weights, pictures, tmp_path):
    """At its own input size: a new head, a truly frozen backbone, one epoch of frozen and of finetune, a prediction
    and a heat map from the run read back from disk, and an ONNX bundle whose own runtime agrees with it."""
    runs = tmp_path / "runs"
    for scenario in ("frozen", "finetune"):
        config = TrainConfig(backbone=name, scenario=scenario, epochs=1, batch_size=4, seed=0, workers=0)
        result = train(config, pictures, family_weights)
        assert result.status == "completed" and len(result.history) == 1, result.message
        saved = save_run(result, pictures, runs)
        if scenario == "frozen":  # the new head is the only trainable layer, and the backbone stays in eval mode
            model = result.model
            head = model.get_submodule(head_layer(model))
            assert getattr(head, "out_features", getattr(head, "out_channels", None)) == 2
            assert result.built.trainable_params == sum(p.numel() for p in head.parameters())
            set_training_mode(model, result.built.scenario)
            backbone_modules = [m for n, m in model.named_modules() if n and not n.startswith(head_path(model))]
            assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) and m.training for m in backbone_modules)
        del result
    run = find_run(saved.id, runs)  # read back from run.json and the saved weights
    preprocessing = get_backbone(name).preprocessing
    assert run.preprocessing == preprocessing and run.scenario == "finetune"
    predictor = load_predictor(run)
    picture_path = pictures.samples["val"][0][0]
    prediction = predictor.predict(picture_path)
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5

    side = preprocessing.crop
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (side + 40, side + 60, 3), dtype=np.uint8))
    heat_map = grad_cam(predictor.model, picture, preprocessing=preprocessing)
    assert heat_map.heat.shape == (side, side) and heat_map.layer
    assert np.isfinite(heat_map.heat).all() and heat_map.heat.max() > 0, heat_map.layer

    exported = export_run(run, "onnx", tmp_path / "out", check_pictures=2)  # the bundle's bytes, run by onnxruntime
    assert exported.pictures_checked == 2 and exported.max_difference < 1e-3
    with zipfile.ZipFile(exported.path) as bundle:
        assert json.loads(bundle.read("bundle.json"))["preprocessing"]["center_crop"] == side


def test_a_recipe_that_trains_the_head_on_pooled_features_alone_first_refuses_squeezenet():
    with pytest.raises(ConfigError, match="squeezenet1_1's head alone first"):
        TrainConfig.from_settings({"recipe": "lp-ft"}, backbone="squeezenet1_1", scenario="finetune")
    assert TrainConfig.from_settings({"recipe": "lp-ft"}, backbone="efficientnet_b0", scenario="finetune").recipe \
        == "lp-ft"


def test_listing_the_catalogue_builds_no_model(monkeypatch, capsys):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was built to list the catalogue")

    monkeypatch.setattr(Backbone, "build", refuse)
    monkeypatch.setattr(models, "get_model", refuse)
    assert main(["backbones"]) == 0
    listed = capsys.readouterr().out
    assert "convnext_tiny" in listed and "vit_h_14" in listed and f"{len(BACKBONES)} of {len(BACKBONES)}" in listed
