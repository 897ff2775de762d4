"""Scenarios, pretrained weights and building a model: the only place each of them is defined (the backbones are
torchvision's, core.backbones)."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from core.backbones import AUXILIARY_HEADS, BACKBONES, Backbone, get_backbone
from core.errors import ConfigError, WeightsError

WEIGHTS_ENV = "STUDIO_WEIGHTS"


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
    torchvision_name: str | None = None  # set only for a file whose hash matches torchvision's published one
    path: str | None = None
    sha256: str | None = None
    # the torchvision weights whose file name this file carries but whose published hash it does not match
    hash_differs_from: str | None = None

    def describe(self, full_path: bool = True) -> str:
        """Where the weights came from, in words; with only the file's name when `full_path` is False."""
        if self.kind == "none":
            return "random initialisation (no pretrained weights)"
        where = {"file": "local file", "torchvision-cache": "torchvision cache", "torchvision-download": "downloaded"}
        path = self.path if full_path else Path(self.path or "").name
        described = f"{where[self.kind]} {path} (sha256 {self.sha256[:12]}…)"
        if self.kind == "file" and self.torchvision_name:
            described += f", torchvision's published {self.torchvision_name}"
        if self.hash_differs_from:
            described += f", not torchvision's published {self.hash_differs_from} file: its hash differs"
        return described

    def to_dict(self) -> dict:
        return asdict(self)


def torchvision_file_name(backbone: Backbone) -> str:
    """The file name torchvision downloads this backbone's ImageNet weights to, e.g. resnet18-f37072fd.pth."""
    return Path(urlparse(backbone.imagenet_weights.url).path).name


def torchvision_cache_file(backbone: Backbone) -> Path:
    """Where torchvision keeps (or would download) this backbone's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / torchvision_file_name(backbone)


def hash_prefix(path: Path, backbone: Backbone) -> str | None:
    """The hash prefix in the name of a file named as torchvision names this backbone's download
    (resnet18-f37072fd.pth, efficientnet_b0_rwightman-7f5810bc.pth) or as NAME-<hex>.pth, found as torch.hub finds
    it; else None."""
    name = Path(path).name
    if name != torchvision_file_name(backbone) and not name.startswith(backbone.name + "-"):
        return None
    match = torch.hub.HASH_REGEX.search(name)
    return (match.group(1) or None) if match else None


def names_backbone(path: Path) -> str | None:
    """The backbone a weights file is named after: torchvision's own file name for it, NAME.pth or
    NAME-anything.pth."""
    name = Path(path).name
    own = [backbone.name for backbone in BACKBONES.values() if name == torchvision_file_name(backbone)]
    named = own or [other for other in BACKBONES if name == f"{other}.pth" or name.startswith(f"{other}-")]
    return max(named, key=len) if named else None


def _weights_in_folder(folder: Path, backbone: Backbone) -> Path | None:
    candidates = ([folder / f"{backbone.name}.pth", folder / torchvision_file_name(backbone)]
                  + sorted(folder.glob(f"{backbone.name}-*.pth")))
    return next((path for path in candidates if path.exists() and names_backbone(path) == backbone.name), None)


def find_local_weights(backbone: Backbone, weights: str | Path | None = None) -> tuple[Path, str] | None:
    """The local file to use, in this order: `weights` (a file or a folder), $STUDIO_WEIGHTS (likewise),
    torchvision's cache. Returns (path, kind) or None when a download is needed.

    A `weights` folder without a file for this backbone is an error; a $STUDIO_WEIGHTS folder may hold other
    backbones' files only, and the lookup then goes on to torchvision's cache. A "torchvision-cache" file is
    only where torchvision keeps its weights: whether it is torchvision's published file is decided from its
    hash when it is read (build_model)."""
    for choice, label in ((weights, "The weights path"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if not choice:
            continue
        path = Path(choice).expanduser()
        if path.is_file() and label == WEIGHTS_ENV and names_backbone(path) not in (None, backbone.name):
            continue  # $STUDIO_WEIGHTS=mobilenet_v2-x.pth says nothing about ResNet-18's weights
        if path.is_file():
            return path, "file"
        if not path.is_dir():
            raise WeightsError(f"{label} {path} does not exist. Give a .pth file or a folder that holds one.")
        found = _weights_in_folder(path, backbone)
        if found:
            return found, "file"
        if label != WEIGHTS_ENV:
            raise WeightsError(
                f"The weights folder {path} holds no {backbone.name} file (looked for {backbone.name}.pth, "
                f"{torchvision_file_name(backbone)} and {backbone.name}-*.pth). Put the file there, or give the "
                "weights file itself."
            )
    cached = torchvision_cache_file(backbone)
    return (cached, "torchvision-cache") if cached.is_file() else None


def ensure_weights(backbone_name: str, weights: str | Path | None = None) -> Path:
    """The local file of a backbone's pretrained weights, downloading torchvision's when there is none here.
    Raises WeightsError when they can be neither found nor downloaded."""
    backbone = get_backbone(backbone_name)
    found = find_local_weights(backbone, weights)
    return found[0] if found else _download_weights(backbone)


def local_backbones() -> list[str]:
    """The backbones whose pretrained weights are on this machine (nothing to download), in the catalogue's order."""
    available = []
    for name, backbone in BACKBONES.items():
        try:
            if find_local_weights(backbone):
                available.append(name)
        except WeightsError:
            continue
    return available


def weights_here(backbone: Backbone, weights: str | Path | None = None) -> str:
    """Where the backbone's ImageNet weights would come from, in a few words: a local file, torchvision's cache, or
    a download (of its size)."""
    try:
        found = find_local_weights(backbone, weights)
    except WeightsError:
        found = None
    if not found:
        return f"download ({backbone.file_mb:.0f} MB)"
    return f"here: {found[0].name}" if found[1] == "file" else "here: torchvision cache"


def catalogue_rows(backbones: list[Backbone], weights: str | Path | None = None) -> list[dict[str, object]]:
    """The catalogue as table rows (the command line's `backbones` and the pages' pickers): building no model."""
    return [{"backbone": b.name, "family": b.family, "params (M)": round(b.params / 1e6, 1),
             "ImageNet top-1": b.top1, "GFLOPS": b.gflops,
             "input": f"{b.preprocessing.crop} (resize {b.preprocessing.resize}, {b.preprocessing.interpolation})",
             "weights": weights_here(b, weights)} for b in backbones]


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


def _record_source(backbone: Backbone, path: Path, kind: str, sha256: str) -> WeightsSource:
    """What to record about a weights file that was read: torchvision's own only if its name and hash say so. A
    file named as torchvision names its downloads (NAME-<hash>.pth) whose sha256 does not start with that hash is
    refused, as torch.hub's check_hash refuses it."""
    prefix = hash_prefix(path, backbone)
    if prefix and not sha256.startswith(prefix):
        raise WeightsError(
            f"{path} is named as torchvision names {backbone.name}'s weights, with the hash {prefix}, but the file's "
            f"sha256 starts with {sha256[:len(prefix)]}: it is damaged, or another file under that name. Delete it "
            f"so that torchvision downloads it again, or rename it {backbone.name}.pth to use it as your own weights."
        )
    if path.name == torchvision_file_name(backbone):
        return WeightsSource(kind, str(backbone.imagenet_weights), str(path), sha256)
    return WeightsSource("file", None, str(path), sha256)


# torch.save writes a zip archive, or (before PyTorch 1.6, and still on request) a pickle.
_ZIP_START, _PICKLE_START = b"PK\x03\x04", b"\x80"


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict in a weights file (a plain one, or wrapped as {"state_dict": ...}) and the sha256 of
    the very bytes it was loaded from. Only tensors are loaded (weights_only); anything else is a WeightsError
    with a one-line message."""
    data = _read_bytes(Path(path))
    return _load_state_dict(data, path), hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a weights file. Give the .pth file itself.")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist. Give a .pth weights file.") from None
    except OSError as exc:
        raise WeightsError(f"{path} cannot be read ({exc.strerror or type(exc).__name__}).") from exc
    if not data:
        raise WeightsError(f"{path} is empty (0 bytes), not a weights file. Copy or download it again.")
    return data


def _load_state_dict(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    if not data.startswith((_ZIP_START, _PICKLE_START)):
        raise WeightsError(
            f"{path} is not a PyTorch weights file (torch.save did not write it). Give a .pth file of a state_dict."
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Weights only" not in str(exc):
            raise _damaged(path) from exc
        raise WeightsError(
            f"{path} is not a plain weights file: it holds Python objects besides tensors, so it will not be "
            "loaded. Give a file of a state_dict, as written by torch.save(model.state_dict(), path)."
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged file
        raise _damaged(path) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors).")
    return state


def _damaged(path: Path) -> WeightsError:
    return WeightsError(
        f"{path} is a damaged or incomplete PyTorch file (cut short while copying or downloading?). "
        "Copy or download it again."
    )


def copy_state(model: nn.Module, device: str | None = None) -> OrderedDict[str, torch.Tensor]:
    """A detached copy of the model's state_dict (on `device`, default: where it is), with each module's version
    (`_metadata`) kept: MNASNet refuses to load a state without it."""
    state = model.state_dict()
    copied = OrderedDict((key, value.detach().to(device) if device else value.detach().clone())
                         for key, value in state.items())
    copied._metadata = getattr(state, "_metadata", None)
    return copied


def load_backbone_weights(model: nn.Module, backbone: Backbone, state: dict[str, torch.Tensor], origin: Path) -> None:
    """Load `state` into an ImageNet-shaped `model`: every backbone key must load; head keys may be missing. The
    weights of auxiliary classifiers the model was built without are left out, as torchvision's builders leave
    them out."""
    expected, metadata = model.state_dict(), getattr(state, "_metadata", None)
    head = head_layer(model)
    is_head = lambda key: key.startswith(head + ".")  # noqa: E731
    state = {key: value for key, value in state.items()
             if key in expected or key.split(".")[0] not in AUXILIARY_HEADS}
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
    usable = OrderedDict((k, v) for k, v in state.items() if not (is_head(k) and v.shape != expected[k].shape))
    usable._metadata = metadata  # each module's version (MNASNet refuses a state without it)
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
    """A torchvision backbone with a new head of `num_classes`, set up for the scenario."""
    backbone, scenario = get_backbone(backbone_name), get_scenario(scenario_name)
    model = backbone.build()
    source = WeightsSource("none")
    if scenario.pretrained:
        found = find_local_weights(backbone, weights)
        path, kind = found if found else (_download_weights(backbone), "torchvision-download")
        state, sha256 = read_state_dict(path)
        source = _record_source(backbone, path, kind, sha256)
        load_backbone_weights(model, backbone, state, path)
    if not scenario.train_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    replace_head(model, num_classes)
    return BuiltModel(
        model=model,
        backbone=backbone,
        scenario=scenario,
        weights_source=source,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
    )


def head_layer(model: nn.Module) -> str:
    """The dotted path of the layer that gives the classes: the model's last Linear (`fc`, `classifier.1`,
    `heads.head`, ...), or, in a model without one (SqueezeNet), its last convolution, a 1x1 one."""
    layers = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)] or [
        name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    return layers[-1]


def head_path(model: nn.Module) -> str:
    """What trains on the backbone's features: `head_layer`, together with the Dropout before it when the two make
    up a Sequential (MobileNetV2's and EfficientNet's classifier)."""
    path = head_layer(model)
    parent_name = path.rpartition(".")[0]
    if parent_name:
        parent, layer = model.get_submodule(parent_name), model.get_submodule(path)
        if isinstance(parent, nn.Sequential) and _count(parent) == _count(layer) and isinstance(layer, nn.Linear):
            return parent_name
    return path


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def replace_head(model: nn.Module, num_classes: int) -> None:
    """A new, randomly initialised `head_layer` of `num_classes` outputs."""
    parent_name, _, attribute = head_layer(model).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attribute)
    new = (nn.Linear(old.in_features, num_classes) if isinstance(old, nn.Linear)
           else nn.Conv2d(old.in_channels, num_classes, kernel_size=1))
    setattr(parent, attribute, new)


def build_architecture(backbone_name: str, num_classes: int) -> nn.Module:
    """The bare network for loading a saved run: no pretrained weights needed."""
    model = get_backbone(backbone_name).build()
    replace_head(model, num_classes)
    return model


def set_training_mode(model: nn.Module, scenario: Scenario, fixed_statistics: bool = False,
                      head_only: bool = False) -> None:
    """model.train(), except that a truly frozen backbone stays in eval mode as a whole (its BatchNorm statistics,
    and any dropout or stochastic depth inside it), its head alone training; and that a backbone whose BatchNorm
    statistics the recipe keeps fixed (`fixed_statistics`) keeps its BatchNorm layers in eval mode (their weights
    still train). A head given alone (`head_only`: it trains on cached features) trains whole, its dropout too."""
    model.train()
    if head_only or not fixed_statistics and (scenario.train_backbone or scenario.backbone_batchnorm_updates):
        return
    whole = not scenario.train_backbone and not scenario.backbone_batchnorm_updates
    head = head_path(model)
    for name, module in model.named_modules():
        if not name or name == head or name.startswith(head + "."):
            continue
        if whole or isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.training = False
