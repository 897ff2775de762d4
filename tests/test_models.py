"""Backbones, scenarios, the weights lookup and the device."""
import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from core.device import pick_device
from core.errors import ConfigError, WeightsError
from core.models import (
    BACKBONES,
    WeightsSource,
    build_model,
    find_local_weights,
    get_backbone,
    get_scenario,
    set_training_mode,
    torchvision_cache_file,
)


def test_a_resnet18_file_in_the_weights_folder_is_used_offline(random_weights_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_WEIGHTS", str(random_weights_dir))
    built = build_model("resnet18", "finetune", num_classes=2)
    source = built.weights_source
    assert source.kind == "file" and Path(source.path).name == "resnet18.pth"
    assert len(source.sha256) == 64 and source.torchvision_name is None
    saved = torch.load(random_weights_dir / "resnet18.pth", weights_only=True)
    assert torch.equal(built.model.conv1.weight, saved["conv1.weight"])
    assert torch.equal(built.model.layer4[1].bn2.running_var, saved["layer4.1.bn2.running_var"])


@pytest.mark.parametrize("where", ["weights folder", "torchvision cache"])
def test_a_file_under_torchvisions_name_with_another_hash_is_refused(random_weights_dir, tmp_path, monkeypatch,
                                                                     where):
    backbone = get_backbone("efficientnet_b0")
    torch.manual_seed(0)
    name = torchvision_cache_file(backbone).name  # efficientnet_b0_rwightman-7f5810bc.pth
    target = tmp_path / name if where == "weights folder" else torchvision_cache_file(backbone)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.build().state_dict(), target)  # random weights: their sha256 starts otherwise
    monkeypatch.setenv("STUDIO_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as error:
        build_model("efficientnet_b0", "frozen", 2)
    message = str(error.value)
    assert name in message and "7f5810bc" in message and "rename it efficientnet_b0.pth" in message
    target.rename(target.with_name("efficientnet_b0.pth"))  # the way out it names: used as the user's own
    if where == "weights folder":
        assert build_model("efficientnet_b0", "frozen", 2).weights_source.path.endswith("efficientnet_b0.pth")


class PublishedWeights:
    """Stands in for a torchvision WeightsEnum member whose published file is one made by the test."""

    def __init__(self, name: str, url: str):
        self.name, self.url = name, url

    def __str__(self) -> str:
        return self.name


def publish(monkeypatch, folder: Path, backbone: str, seed: int) -> tuple[str, str]:
    """Save random weights, and make torchvision's file name for `backbone` carry their hash prefix, as
    torchvision's own names do. Returns (file name, weights name)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(built_state(backbone, seed), folder / "made.pth")
    prefix = hashlib.sha256((folder / "made.pth").read_bytes()).hexdigest()[:8]
    file_name, weights_name = f"{backbone}-{prefix}.pth", f"Made_{backbone}_Weights.V1"
    (folder / "made.pth").rename(folder / file_name)
    published = PublishedWeights(weights_name, f"https://download.pytorch.org/models/{file_name}")
    monkeypatch.setitem(BACKBONES, backbone, dataclasses.replace(BACKBONES[backbone], imagenet_weights=published))
    return file_name, weights_name


def test_a_cached_file_with_torchvisions_hash_is_recorded_as_torchvisions_weights(monkeypatch):
    checkpoints = torchvision_cache_file(get_backbone("resnet18")).parent
    file_name, weights_name = publish(monkeypatch, checkpoints, "resnet18", seed=3)
    assert torchvision_cache_file(get_backbone("resnet18")).name == file_name
    source = build_model("resnet18", "frozen", 2).weights_source
    assert (source.kind, source.torchvision_name, source.hash_differs_from) == ("torchvision-cache", weights_name, None)


def test_a_given_file_with_torchvisions_name_and_hash_is_recorded_as_torchvisions_weights(tmp_path, monkeypatch):
    file_name, weights_name = publish(monkeypatch, tmp_path / "mine", "mobilenet_v2", seed=4)
    source = build_model("mobilenet_v2", "frozen", 2, weights=tmp_path / "mine" / file_name).weights_source
    assert (source.kind, source.torchvision_name, source.hash_differs_from) == ("file", weights_name, None)
    assert f"torchvision's published {weights_name}" in source.describe()


def test_a_weights_source_saved_before_the_hash_check_still_loads():
    old = {"kind": "torchvision-cache", "torchvision_name": "MobileNet_V2_Weights.IMAGENET1K_V1",
           "path": "/cache/mobilenet_v2-b0353104.pth", "sha256": "b0353104" + "0" * 56}
    source = WeightsSource(**old)
    assert source.hash_differs_from is None
    assert source.describe().startswith("torchvision cache /cache/mobilenet_v2-b0353104.pth (sha256 b03531040000")
    assert WeightsSource(**source.to_dict()) == source


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


def test_a_weights_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("resnet18", "finetune", 2, weights=tmp_path / "nope.pth")


def test_a_weights_folder_without_a_file_for_the_backbone_is_an_error(random_weights_dir, tmp_path):
    folder = tmp_path / "only-mobilenet"
    folder.mkdir()
    shutil.copyfile(random_weights_dir / "mobilenet_v2-test.pth", folder / "mobilenet_v2-test.pth")
    expected = (f"The weights folder {folder} holds no resnet18 file (looked for resnet18.pth, resnet18-f37072fd.pth "
                "and resnet18-*.pth).")
    with pytest.raises(WeightsError) as error:
        build_model("resnet18", "finetune", 2, weights=folder)  # the network guard fails the test if it downloads
    assert expected in str(error.value) and error.value.setting == "weights"


def test_a_studio_weights_folder_without_a_file_for_the_backbone_goes_on_to_torchvisions_cache(
    random_weights_dir, tmp_path, monkeypatch
):
    folder = tmp_path / "only-mobilenet"
    folder.mkdir()
    shutil.copyfile(random_weights_dir / "mobilenet_v2-test.pth", folder / "mobilenet_v2-test.pth")
    monkeypatch.setenv("STUDIO_WEIGHTS", str(folder))
    resnet18 = get_backbone("resnet18")
    assert find_local_weights(resnet18) is None  # a download is next
    torchvision_cache_file(resnet18).parent.mkdir(parents=True)
    shutil.copyfile(random_weights_dir / "resnet18.pth", torchvision_cache_file(resnet18))
    assert find_local_weights(resnet18) == (torchvision_cache_file(resnet18), "torchvision-cache")
    assert find_local_weights(get_backbone("mobilenet_v2")) == (folder / "mobilenet_v2-test.pth", "file")


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
        set_training_mode(built.model, built.scenario)
        batchnorms = [m for m in built.model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(m.training == expect_training for m in batchnorms), name
        assert built.model.fc.training


def test_unknown_names_are_refused_with_the_same_kind_of_error():
    with pytest.raises(ConfigError, match="Unknown backbone 'vgg'. Did you mean vgg11, .*python -m core backbones"):
        get_backbone("vgg")
    with pytest.raises(ConfigError, match="finetune, frozen"):
        get_scenario("magic")


def test_a_weights_file_in_the_environment_named_for_another_backbone_is_not_used(random_weights_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_WEIGHTS", str(random_weights_dir / "mobilenet_v2-test.pth"))
    assert find_local_weights(get_backbone("resnet18")) is None
    assert find_local_weights(get_backbone("mobilenet_v2"))[0].name == "mobilenet_v2-test.pth"


# ---------------------------------------------------------------- the device

@pytest.mark.parametrize("requested", ["meta", "", "cpu:0:1", "gpu", "CUDA", " cpu", "cuda:", "cuda:-1", "xla"])
def test_only_real_compute_devices_are_accepted(requested):
    with pytest.raises(ConfigError) as error:
        pick_device(requested)
    message = str(error.value)
    assert message.startswith(f"Unknown device {requested!r}; choose auto") and "cpu" in message
    assert "\n" not in message and error.value.setting == "device"


@pytest.mark.parametrize("requested", ["cuda", "cuda:7"])
def test_a_gpu_on_a_machine_without_cuda_is_one_line(requested, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no usable CUDA GPU; choose the device auto or cpu") as error:
        pick_device(requested)
    assert "\n" not in str(error.value) and error.value.setting == "device"


def test_a_gpu_number_beyond_the_machines_gpus_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError) as error:
        pick_device("cuda:7")
    assert str(error.value) == "cuda:7 was asked for but this machine has only 2 CUDA GPUs; choose auto, cpu, cuda " \
                               "or cuda:0 to cuda:1."
    assert error.value.setting == "device"
    assert pick_device("cuda:1") == torch.device("cuda:1")


def test_the_cpu_is_always_accepted():
    assert pick_device("cpu") == torch.device("cpu")
