"""The backbone catalogue: every ImageNet classifier that torchvision ships with weights, read from torchvision's own
registry (`list_models`, `get_model_weights`): its family, its weights' preprocessing and their meta (parameters,
ImageNet top-1, GFLOPS, file size). No table of our own: what torchvision states is what the studio shows.

Listing the catalogue builds no model. What depends on a built model (the head to replace, where Grad-CAM looks) is
found on the model itself (core.models, core.explain).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

from core.errors import ConfigError
from core.presets import Preprocessing

DEFAULT_BACKBONE = "resnet18"  # the tutorial's
# torchvision's module names, shortened where a user would search for the short one
_FAMILY_NAMES = {"mobilenetv2": "mobilenet_v2", "mobilenetv3": "mobilenet_v3", "shufflenetv2": "shufflenet_v2",
                 "swin_transformer": "swin", "vision_transformer": "vit"}
# Auxiliary classifiers that torchvision's builders drop when asked for a model without them (aux_logits=False)
AUXILIARY_HEADS = ("aux1", "aux2", "AuxLogits")


@dataclass(frozen=True)
class Backbone:
    """One torchvision ImageNet classifier, named as torchvision names it, with the ImageNet weights the studio
    starts from: IMAGENET1K_V1 where torchvision has it (what `pretrained=True` gave, and the tutorial used), else
    torchvision's default."""

    name: str
    title: str
    family: str
    imagenet_weights: WeightsEnum

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.of(self.imagenet_weights.transforms())

    @property
    def params(self) -> int:
        return int(self.imagenet_weights.meta["num_params"])

    @property
    def top1(self) -> float:
        return float(self.imagenet_weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])

    @property
    def gflops(self) -> float:
        return float(self.imagenet_weights.meta["_ops"])

    @property
    def file_mb(self) -> float:
        return float(self.imagenet_weights.meta["_file_size"])

    @property
    def imagenet_classes(self) -> int:
        return len(self.imagenet_weights.meta["categories"])

    @property
    def pooled_head(self) -> bool:
        """Whether the head is a Linear on pooled features. SqueezeNet's alone is not: a 1x1 convolution followed
        by ReLU and pooling, so its frozen features are not cached (its frozen runs pass through the backbone)."""
        return self.family != "squeezenet"

    def build(self) -> nn.Module:
        """The bare ImageNet-shaped network, randomly initialised, set up as torchvision's builder sets it up for
        these weights: GoogLeNet and Inception v3 without their auxiliary classifiers (torchvision's own option,
        aux_logits=False) and with the input transform their weights expect; the transformers at their weights'
        input size."""
        return models.get_model(self.name, weights=None, **self._options())

    def _options(self) -> dict:
        if self.family in ("googlenet", "inception"):
            return {"aux_logits": False, "transform_input": True, "init_weights": True}
        if self.family == "vit":
            return {"image_size": self.imagenet_weights.meta["min_size"][0]}
        if self.family == "maxvit":
            return {"input_size": self.imagenet_weights.meta["min_size"]}
        return {}


def _family(name: str) -> str:
    module = models.get_model_builder(name).__module__.rpartition(".")[2]
    if module == "efficientnet" and name.startswith("efficientnet_v2"):
        return "efficientnet_v2"
    return _FAMILY_NAMES.get(module, module)


def _doc_title(name: str) -> str:
    """The name torchvision's builder gives the model in its first line, e.g. "ResNet-18", "ConvNeXt Tiny"."""
    line = (models.get_model_builder(name).__doc__ or name).strip().splitlines()[0]
    line = re.sub(r"^Constructs an? ", "", line)
    title = re.split(r" model\b| architecture\b| from\b| with\b|,", line)[0].strip()
    return re.sub(r"^(large|small) (\S+)$", r"\2 \1", title)  # "small MobileNetV3" -> "MobileNetV3 small"


def _imagenet_weights(name: str) -> WeightsEnum | None:
    weights = models.get_model_weights(name)
    imagenet = [w for w in weights if len(w.meta.get("categories") or ()) == 1000]
    if not imagenet:
        return None
    return getattr(weights, "IMAGENET1K_V1", None) or weights.DEFAULT


@functools.cache
def catalogue() -> dict[str, Backbone]:
    """Every torchvision classification model with ImageNet weights, by name, in torchvision's order."""
    names = [name for name in models.list_models(module=models) if _imagenet_weights(name)]
    titles = {name: _doc_title(name) for name in names}
    counts = {title: list(titles.values()).count(title) for title in titles.values()}
    return {name: Backbone(name, titles[name] if counts[titles[name]] == 1 else name, _family(name),
                           _imagenet_weights(name)) for name in names}


BACKBONES: dict[str, Backbone] = catalogue()


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        close = [other for other in BACKBONES if name.lower().split("_")[0] in other][:6]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown backbone {name!r}.{hint} `python -m core backbones` lists all "
                          f"{len(BACKBONES)}.") from None


def families() -> list[str]:
    return sorted({backbone.family for backbone in BACKBONES.values()})


def select(family: str | None = None, max_params: float | None = None, search: str | None = None) -> list[Backbone]:
    """The catalogue's backbones of `family` (`families()`, any case), with at most `max_params` million parameters,
    whose name or title holds `search`."""
    chosen = []
    for backbone in BACKBONES.values():
        if family and family.lower() != backbone.family:
            continue
        if max_params is not None and backbone.params > max_params * 1e6:
            continue
        if search and search.lower() not in f"{backbone.name} {backbone.title}".lower():
            continue
        chosen.append(backbone)
    return chosen
