"""Backbones, scenarios and pretrained weights: the only place each of them is defined."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

from core.errors import ConfigError, WeightsError

WEIGHTS_ENV = "STUDIO_WEIGHTS"


@dataclass(frozen=True)
class Backbone:
    name: str
    title: str
    build: Callable[..., nn.Module]  # torchvision constructor, ImageNet head of 1000 classes
    imagenet_weights: WeightsEnum
    head: str  # dotted path of the final Linear layer that each scenario replaces
    cam_layer: str  # the last convolutional block: where Grad-CAM looks


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(
        "resnet18", "ResNet-18", models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "fc", "layer4"
    ),
    "mobilenet_v2": Backbone(
        "mobilenet_v2", "MobileNetV2", models.mobilenet_v2, models.MobileNet_V2_Weights.IMAGENET1K_V1, "classifier.1",
        "features.18",
    ),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    pretrained: bool
    train_backbone: bool
    backbone_batchnorm_updates: bool  # only matters when the backbone is frozen


SCENARIOS: dict[str, Scenario] = {
    "finetune": Scenario(
        "finetune", "Finetune", "Start from ImageNet weights and train every layer.", True, True, True
    ),
    "frozen": Scenario(
        "frozen", "Frozen feature extractor",
        "Keep the ImageNet backbone fixed (BatchNorm statistics too) and train only the new last layer.",
        True, False, False,
    ),
    "frozen-tutorial": Scenario(
        "frozen-tutorial", "Frozen, as in the tutorial",
        "Train only the new last layer, but let the backbone's BatchNorm statistics keep updating, "
        "as the tutorial's code does by leaving the whole model in training mode.",
        True, False, True,
    ),
    "scratch": Scenario(
        "scratch", "From scratch", "No pretrained weights; train every layer. The control for transfer learning.",
        False, True, True,
    ),
}
# The tutorial's two scenarios: what the command line's "both" and the pages train and show by default.
TUTORIAL_SCENARIOS = ("finetune", "frozen")


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.") from None


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigError(f"Unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}.") from None


# ---------------------------------------------------------------- weights lookup

@dataclass(frozen=True)
class WeightsSource:
    """Where a model's starting weights came from."""

    kind: str  # "file", "torchvision-cache", "torchvision-download" or "none"
    torchvision_name: str | None = None
    path: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        if self.kind == "none":
            return "random initialisation (no pretrained weights)"
        where = {"file": "local file", "torchvision-cache": "torchvision cache", "torchvision-download": "downloaded"}
        return f"{where[self.kind]} {self.path} (sha256 {self.sha256[:12]}…)"

    def to_dict(self) -> dict:
        return asdict(self)


def torchvision_cache_file(backbone: Backbone) -> Path:
    """Where torchvision keeps (or would download) this backbone's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(backbone.imagenet_weights.url).path).name


def _weights_in_folder(folder: Path, backbone: Backbone) -> Path | None:
    candidates = sorted(folder.glob(f"{backbone.name}.pth")) + sorted(folder.glob(f"{backbone.name}-*.pth"))
    return candidates[0] if candidates else None


def _names_another_backbone(path: Path, backbone: Backbone) -> bool:
    return any(path.name.startswith(other) for other in BACKBONES if other != backbone.name)


def find_local_weights(backbone: Backbone, weights: str | Path | None = None) -> tuple[Path, str] | None:
    """The local file to use, in this order: `weights` (a file or a folder), $STUDIO_WEIGHTS (likewise),
    torchvision's cache. Returns (path, kind) or None when a download is needed."""
    for choice, label in ((weights, "The weights path"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if not choice:
            continue
        path = Path(choice).expanduser()
        if path.is_file() and label == WEIGHTS_ENV and _names_another_backbone(path, backbone):
            continue  # $STUDIO_WEIGHTS=mobilenet_v2-x.pth says nothing about ResNet-18's weights
        if path.is_file():
            return path, "file"
        if not path.is_dir():
            raise WeightsError(f"{label} {path} does not exist. Give a .pth file or a folder that holds one.")
        found = _weights_in_folder(path, backbone)
        if found:
            return found, "file"
    cached = torchvision_cache_file(backbone)
    return (cached, "torchvision-cache") if cached.is_file() else None


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    info = path.stat()
    return _sha256(str(path.resolve()), info.st_size, info.st_mtime_ns)


def _download_weights(backbone: Backbone) -> Path:
    name = f"torchvision's {backbone.imagenet_weights}"
    try:
        backbone.imagenet_weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"Could not download {name} ({reason}). Without a network, copy a {backbone.name} weights file "
            f"to {torchvision_cache_file(backbone)}, or set {WEIGHTS_ENV} to a weights file or a folder that holds one."
        ) from exc
    return torchvision_cache_file(backbone)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or unsafe file
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({exc}).") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors).")
    return state


def load_backbone_weights(model: nn.Module, backbone: Backbone, state: dict[str, torch.Tensor], origin: Path) -> None:
    """Load `state` into an ImageNet-shaped `model`: every backbone key must load; head keys may be missing."""
    expected = model.state_dict()
    is_head = lambda key: key.startswith(backbone.head + ".")  # noqa: E731
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in set(expected) - set(state) if not is_head(k))
    wrong_shape = sorted(
        k for k in set(state) & set(expected) if state[k].shape != expected[k].shape and not is_head(k)
    )
    problems = []
    if missing:
        problems.append(f"missing backbone keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if wrong_shape:
        problems.append(f"keys of the wrong shape {_few(wrong_shape)}")
    if problems:
        raise WeightsError(f"{origin} does not fit {backbone.title}: " + "; ".join(problems) + ".")
    usable = {k: v for k, v in state.items() if not (is_head(k) and v.shape != expected[k].shape)}
    model.load_state_dict(usable, strict=False)


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# ---------------------------------------------------------------- building a model

@dataclass
class BuiltModel:
    model: nn.Module
    backbone: Backbone
    scenario: Scenario
    weights_source: WeightsSource
    trainable_params: int
    total_params: int


def build_model(
    backbone_name: str,
    scenario_name: str,
    num_classes: int,
    weights: str | Path | None = None,
) -> BuiltModel:
    """A torchvision backbone with a new Linear head of `num_classes`, set up for the scenario."""
    backbone, scenario = get_backbone(backbone_name), get_scenario(scenario_name)
    model = backbone.build(weights=None)
    source = WeightsSource("none")
    if scenario.pretrained:
        found = find_local_weights(backbone, weights)
        path, kind = found if found else (_download_weights(backbone), "torchvision-download")
        load_backbone_weights(model, backbone, _read_state_dict(path), path)
        torchvision_name = str(backbone.imagenet_weights) if kind != "file" else None
        source = WeightsSource(kind, torchvision_name, str(path), sha256_of(path))
    if not scenario.train_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    replace_head(model, backbone, num_classes)
    return BuiltModel(
        model=model,
        backbone=backbone,
        scenario=scenario,
        weights_source=source,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
    )


def replace_head(model: nn.Module, backbone: Backbone, num_classes: int) -> None:
    parent_name, _, attribute = backbone.head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old: nn.Linear = getattr(parent, attribute)
    setattr(parent, attribute, nn.Linear(old.in_features, num_classes))


def build_architecture(backbone_name: str, num_classes: int) -> nn.Module:
    """The bare network for loading a saved run: no pretrained weights needed."""
    backbone = get_backbone(backbone_name)
    model = backbone.build(weights=None)
    replace_head(model, backbone, num_classes)
    return model


def set_training_mode(model: nn.Module, backbone: Backbone, scenario: Scenario) -> None:
    """model.train(), except that a truly frozen backbone keeps its BatchNorm layers in eval mode."""
    model.train()
    if scenario.train_backbone or scenario.backbone_batchnorm_updates:
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith(backbone.head):
            module.eval()
