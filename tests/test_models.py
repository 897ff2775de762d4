"""Backbones, scenarios and the weights lookup."""
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from core.errors import ConfigError, WeightsError
from core.models import (
    BACKBONES,
    build_model,
    find_local_weights,
    get_backbone,
    get_scenario,
    set_training_mode,
    torchvision_cache_file,
)


def test_a_torchvision_resnet18_file_in_the_weights_folder_is_used_offline(random_weights_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_WEIGHTS", str(random_weights_dir))
    built = build_model("resnet18", "finetune", num_classes=2)
    source = built.weights_source
    assert source.kind == "file" and Path(source.path).name == "resnet18-f37072fd.pth"
    assert len(source.sha256) == 64
    saved = torch.load(random_weights_dir / "resnet18-f37072fd.pth", weights_only=True)
    assert torch.equal(built.model.conv1.weight, saved["conv1.weight"])
    assert torch.equal(built.model.layer4[1].bn2.running_var, saved["layer4.1.bn2.running_var"])


def test_a_resnet18_file_in_torchvisions_cache_is_used_offline(random_weights_dir):
    cache_file = torchvision_cache_file(get_backbone("resnet18"))
    cache_file.parent.mkdir(parents=True)
    shutil.copyfile(random_weights_dir / "resnet18-f37072fd.pth", cache_file)
    built = build_model("resnet18", "frozen", num_classes=2)
    assert built.weights_source.kind == "torchvision-cache"
    assert built.weights_source.path == str(cache_file)


def test_an_explicit_file_comes_before_the_environment(random_weights_dir, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    torch.save(built_state("mobilenet_v2", seed=5), other / "mobilenet_v2-other.pth")
    monkeypatch.setenv("STUDIO_WEIGHTS", str(random_weights_dir))
    built = build_model("mobilenet_v2", "frozen", 2, weights=other / "mobilenet_v2-other.pth")
    assert built.weights_source.path == str(other / "mobilenet_v2-other.pth")


def built_state(backbone: str, seed: int) -> dict:
    torch.manual_seed(seed)
    return BACKBONES[backbone].build().state_dict()


def test_a_file_without_the_classifier_loads(tmp_path):
    state = {k: v for k, v in built_state("mobilenet_v2", 0).items() if not k.startswith("classifier")}
    torch.save(state, tmp_path / "features.pth")
    built = build_model("mobilenet_v2", "frozen", 3, weights=tmp_path / "features.pth")
    assert torch.equal(built.model.features[0][0].weight, state["features.0.0.weight"])
    assert built.model.classifier[1].out_features == 3


def test_missing_backbone_keys_are_named(tmp_path):
    state = built_state("resnet18", 0)
    del state["layer2.0.conv1.weight"]
    torch.save(state, tmp_path / "resnet18-broken.pth")
    with pytest.raises(WeightsError, match="missing backbone keys layer2.0.conv1.weight"):
        build_model("resnet18", "finetune", 2, weights=tmp_path / "resnet18-broken.pth")


def test_weights_of_another_backbone_are_refused_with_the_keys(random_weights_dir):
    expected = "does not fit ResNet-18: missing backbone keys.*unexpected keys classifier.1.bias"
    with pytest.raises(WeightsError, match=expected):
        build_model("resnet18", "finetune", 2, weights=random_weights_dir / "mobilenet_v2-test.pth")


def test_a_file_that_is_not_weights_is_refused(tmp_path):
    (tmp_path / "resnet18-x.pth").write_text("hello")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        build_model("resnet18", "finetune", 2, weights=tmp_path / "resnet18-x.pth")


def test_a_weights_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("resnet18", "finetune", 2, weights=tmp_path / "nope.pth")


def test_without_network_or_local_weights_the_user_is_told_what_to_do(network_attempts):
    with pytest.raises(WeightsError) as error:
        build_model("resnet18", "finetune", 2)
    # the library names its own setting; the command line and the pages add how to change it in theirs
    assert "resnet18-f37072fd.pth" in str(error.value) and "STUDIO_WEIGHTS" in str(error.value)
    assert "--" not in str(error.value) and error.value.setting == "weights"
    assert network_attempts.attempts(), "the download should have been tried (and refused by the guard)"


def test_scratch_needs_no_weights():
    built = build_model("resnet18", "scratch", 2)
    assert built.weights_source.kind == "none"
    assert built.trainable_params == built.total_params


@pytest.mark.parametrize("backbone, head_size", [("resnet18", 512 * 5 + 5), ("mobilenet_v2", 1280 * 5 + 5)])
def test_frozen_trains_only_the_new_head(random_weights_dir, backbone, head_size):
    built = build_model(backbone, "frozen", 5, weights=random_weights_dir)
    assert built.trainable_params == head_size
    finetune = build_model(backbone, "finetune", 5, weights=random_weights_dir)
    assert finetune.trainable_params == finetune.total_params == built.total_params


def test_truly_frozen_keeps_backbone_batchnorm_in_eval_mode(random_weights_dir):
    for name, expect_training in (("frozen", False), ("frozen-tutorial", True), ("finetune", True)):
        built = build_model("resnet18", name, 2, weights=random_weights_dir)
        set_training_mode(built.model, built.backbone, built.scenario)
        batchnorms = [m for m in built.model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(m.training == expect_training for m in batchnorms), name
        assert built.model.fc.training


def test_unknown_names_are_refused_with_the_same_kind_of_error():
    with pytest.raises(ConfigError, match="choose one of: resnet18, mobilenet_v2"):
        get_backbone("vgg")
    with pytest.raises(ConfigError, match="finetune, frozen"):
        get_scenario("magic")


def test_a_weights_file_in_the_environment_named_for_another_backbone_is_not_used(random_weights_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_WEIGHTS", str(random_weights_dir / "mobilenet_v2-test.pth"))
    assert find_local_weights(get_backbone("resnet18")) is None
    assert find_local_weights(get_backbone("mobilenet_v2"))[0].name == "mobilenet_v2-test.pth"
