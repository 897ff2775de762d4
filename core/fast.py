"""Fast paths: pictures decoded once and kept in memory, cached features of a truly frozen backbone, and evaluation
with BatchNorm folded into the convolutions.

The recipe does not change: the same crops, flips and normalisation, the same batch size, optimiser and
schedule. What goes is the work the tutorial's loop repeats every epoch: decoding every JPEG, for a
frozen backbone running the backbone again, and in evaluation applying BatchNorm's fixed affine map on its own.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.fx import Node, symbolic_trace
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

from core.data import DatasetScan, make_loader, make_loaders
from core.device import autocast, to_input
from core.distributed import SINGLE, World
from core.images import open_image
from core.models import BuiltModel, Scenario
from core.presets import EVAL_TRANSFORM, TRAIN_TRANSFORM

# Pictures are kept at most this large on their shorter side: the smallest crop RandomResizedCrop takes
# (the smallest scale at the narrowest ratio) is then still crop_size pixels or more, so every crop is a
# downscale, as from the original file, and sees the same detail. Crops are drawn on the original size and
# scaled (see `augment`), so they fall where the tutorial's fall. Most photos are smaller and kept whole.
MAX_SHORT_SIDE = math.ceil(TRAIN_TRANSFORM.crop_size / math.sqrt(TRAIN_TRANSFORM.scale[0] * TRAIN_TRANSFORM.ratio[0]))
# Above this many bytes of decoded pictures, training reads them from disk every epoch as the tutorial does.
MEMORY_BUDGET = 1 << 30

Progress = Callable[[str, int, int], None]  # (phase, batch, batches): progress within one pass


# ---------------------------------------------------------------- pictures decoded once

def augment(picture: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TRAIN_TRANSFORM's random crop and flip of a stored uint8 picture whose original was `size` (height, width).

    The crop is drawn by TRAIN_TRANSFORM's own code, with its random numbers, on the original size, then
    scaled to the stored picture: for a given seed it falls where the tutorial's falls.
    """
    preset = TRAIN_TRANSFORM
    top, left, height, width = RandomResizedCrop.get_params(torch.empty(()).expand(3, *size), preset.scale,
                                                             preset.ratio)
    fy, fx = picture.shape[-2] / size[0], picture.shape[-1] / size[1]
    crop = F2.resized_crop(picture, round(top * fy), round(left * fx), max(1, round(height * fy)),
                           max(1, round(width * fx)), [preset.crop_size, preset.crop_size], antialias=True)
    return F2.horizontal_flip(crop) if torch.rand(1) < preset.hflip_prob else crop


def decode(path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
    """A picture as `open_image` reads it, as a uint8 (3, H, W) tensor shrunk to MAX_SHORT_SIDE if larger,
    and its original (height, width)."""
    image = open_image(path)
    size = (image.height, image.width)
    if min(size) > MAX_SHORT_SIDE:
        image = F.resize(image, MAX_SHORT_SIDE)
    return F.pil_to_tensor(image), size


def decode_eval(path: Path) -> torch.Tensor:
    """EVAL_TRANSFORM's resize and centre crop as uint8 (3, 224, 224); `to_input` of it is EVAL_TRANSFORM's result."""
    return F.pil_to_tensor(EVAL_TRANSFORM.geometry(open_image(path)))


def decoded_bytes(scan: DatasetScan) -> int:
    """What the decoded pictures of `scan` take in memory, from the picture headers."""
    evaluated = sum(len(scan.samples[split]) for split in scan.evaluation_splits)
    total = evaluated * 3 * EVAL_TRANSFORM.crop_size**2
    for path, _ in scan.samples["train"]:
        with Image.open(path) as image:
            width, height = image.size
        shrink = min(1.0, MAX_SHORT_SIDE / min(width, height))
        total += 3 * round(width * shrink) * round(height * shrink)
    return total


class AugmentedPictures(Dataset):
    """Decoded pictures with TRAIN_TRANSFORM's random crop and flip, drawn anew at every access."""

    def __init__(self, pictures: list[torch.Tensor], sizes: list[tuple[int, int]], labels: list[int]):
        self.pictures, self.sizes, self.labels = pictures, sizes, labels

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int):
        return augment(self.pictures[index], self.sizes[index]), self.labels[index]


class InMemoryData:
    """A data set decoded once: training pictures to augment, validation (and test) crops ready to normalise.

    `storage` is where the pictures live and are cropped: the training device when the loaders run in
    this process (on CUDA the pictures and their augmentation then stay on the GPU), else the CPU.
    """

    def __init__(self, scan: DatasetScan, storage: torch.device | str = "cpu"):
        paths, labels = zip(*scan.samples["train"])
        pictures, sizes = zip(*map(decode, paths))
        self.train = AugmentedPictures([picture.to(storage) for picture in pictures], list(sizes), list(labels))
        self.evaluation = {}
        for split in scan.evaluation_splits:
            crops = torch.stack([decode_eval(path) for path, _ in scan.samples[split]]).to(storage)
            labels = torch.tensor([label for _, label in scan.samples[split]], device=storage)
            self.evaluation[split] = TensorDataset(crops, labels)

    def loaders(self, batch_size: int, workers: int = 0, seed: int | None = None,
                shuffle: bool = True) -> dict[str, DataLoader]:
        return {"train": make_loader(self.train, batch_size, shuffle, workers, seed),
                **{split: make_loader(data, batch_size, False, workers) for split, data in self.evaluation.items()}}


def decoded_loaders(scan: DatasetScan, batch_size: int, workers: int | None, seed: int | None, device: torch.device,
                    shuffle: bool = True) -> dict[str, DataLoader]:
    """Loaders of pictures decoded once, or, when they would take more than MEMORY_BUDGET, read from disk."""
    if decoded_bytes(scan) > MEMORY_BUDGET:
        return make_loaders(scan, batch_size, workers, seed, shuffle)
    workers = workers or 0  # the pictures are ready: loader processes would only take cores from the model
    storage = device if device.type == "cuda" and workers == 0 else torch.device("cpu")
    return InMemoryData(scan, storage).loaders(batch_size, workers, seed, shuffle)


# ---------------------------------------------------------------- evaluation with BatchNorm folded

class FoldedEvaluation:
    """`model` for evaluation with each BatchNorm folded into the convolution before it: the same outputs up to
    rounding, sooner (measured: 0.51 s against 0.69 s per pass over the tutorial's 153 validation pictures,
    MobileNetV2 on CPU).

    Traced once (torch.fx), sharing every other layer with `model`; each call refreshes the folded convolutions
    from the model's current weights. (torch.fx's `fuse` would trace a new copy at every call, and its graphs'
    reference cycles wait for the garbage collector's rare full passes: 90 MiB more peak memory over 25 epochs.)
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.traced = symbolic_trace(model)
        layers = dict(self.traced.named_modules())
        self.pairs: list[tuple[nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.Conv2d]] = []
        for node in list(self.traced.graph.nodes):
            before = node.args[0] if node.op == "call_module" and node.args else None
            if not (isinstance(layers.get(node.target), nn.BatchNorm2d) and isinstance(before, Node)
                    and before.op == "call_module" and isinstance(layers.get(before.target), nn.Conv2d)
                    and len(before.users) == 1):
                continue
            parent, _, name = before.target.rpartition(".")
            if self.traced.get_submodule(parent) is model.get_submodule(parent):
                continue  # a container torch.fx shares with the model: folding into it would change the model
            conv, norm = layers[before.target], layers[node.target]
            folded = copy.deepcopy(conv)
            folded.bias = nn.Parameter(torch.empty(conv.out_channels, device=conv.weight.device))
            setattr(self.traced.get_submodule(parent), name, folded)
            node.replace_all_uses_with(before)
            self.traced.graph.erase_node(node)
            self.pairs.append((conv, norm, folded))
        self.traced.recompile()

    @torch.no_grad()
    def __call__(self) -> nn.Module:
        """The folded model, in eval mode, with the model's weights as they are now."""
        self.model.eval()
        for conv, norm, folded in self.pairs:
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                                                norm.weight, norm.bias)
            folded.weight.copy_(weight)
            folded.bias.copy_(bias)
        return self.traced.eval()


# ---------------------------------------------------------------- cached features of a frozen backbone

def feature_batch_size(device: torch.device) -> int:
    """Batch size for computing features: it does not change them (BatchNorm is in eval mode), only the speed."""
    return 64 if device.type == "cuda" else 4  # on CPU small batches stay in cache: measured faster


def cacheable(scenario: Scenario) -> bool:
    """Features can be cached only when the backbone is truly fixed, BatchNorm statistics included."""
    return not scenario.train_backbone and not scenario.backbone_batchnorm_updates


def head_of(built: BuiltModel) -> tuple[nn.Module, str, nn.Module]:
    """(parent, name, module) of what trains on the pooled features: the head Linear, together with the
    Dropout before it when the two make up a Sequential (MobileNetV2's classifier)."""
    model, path = built.model, built.backbone.head
    parent_name, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_name)
    head = getattr(parent, name)
    if parent_name and isinstance(parent, nn.Sequential) and sum(p.numel() for p in parent.parameters()) == sum(
        p.numel() for p in head.parameters()
    ):
        grand_name, _, name = parent_name.rpartition(".")
        parent, head = model.get_submodule(grand_name), parent
    return parent, name, head


@contextmanager
def headless(built: BuiltModel):
    """The model with `head_of` it replaced by Identity: it returns the features that the head sees."""
    parent, name, head = head_of(built)
    setattr(parent, name, nn.Identity())
    try:
        yield built.model
    finally:
        setattr(parent, name, head)


@dataclass
class CachedFeatures:
    """A frozen backbone's features: of `views` augmented views of every training picture, (pictures, views,
    features) with the labels, and of every evaluation picture ("val", and "test" when there is one)."""

    train: TensorDataset
    evaluation: dict[str, TensorDataset]

    def select(self, indices: list[int]) -> CachedFeatures:
        """Only the training pictures at `indices` (in the data set's order); every evaluation picture stays."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.train.tensors[0].device)
        return CachedFeatures(TensorDataset(*(tensor[index] for tensor in self.train.tensors)), self.evaluation)


@torch.no_grad()
def extract_features(
    built: BuiltModel, loaders: dict[str, DataLoader], views: int, device: torch.device, *,
    progress: Progress | None = None, channels_last: bool = False, dtype: torch.dtype | None = None,
    world: World = SINGLE,
) -> CachedFeatures:
    """Backbone features of `views` passes over the (augmenting, unshuffled) training loader, and of one pass
    over each evaluation loader. With several processes the loaders hold each process's share of the pictures
    (World.shard): each picture's features are computed once in all, and every process gets them all."""
    batches = sum(world.most_batches(loader) * (views if split == "train" else 1) for split, loader in loaders.items())
    done = 0
    width = next(layer for layer in head_of(built)[2].modules() if isinstance(layer, nn.Linear)).in_features

    def report(_phase: str, _batch: int, _batches: int) -> None:
        nonlocal done
        done += 1
        if progress:
            progress("features", done, batches)

    def features_of(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [torch.zeros((0, width), device=device)]
        labels = [torch.zeros(0, dtype=torch.long, device=device)]
        for inputs, targets in world.batches(loader, "features", report):
            with autocast(device, dtype):
                outputs.append(model(to_input(inputs, device, channels_last)).float().flatten(1))
            labels.append(targets.to(device))
        count = len(loader.dataset)
        return world.gather_in_order(torch.cat(outputs), count), world.gather_in_order(torch.cat(labels), count)

    with headless(built) as model:
        if channels_last:
            model.to(memory_format=torch.channels_last)
        folded = FoldedEvaluation(model)()
        passes = [features_of(folded, loaders["train"]) for _ in range(views)]
        evaluation = {split: TensorDataset(*features_of(folded, loader)) for split, loader in loaders.items()
                      if split != "train"}
    train_features = torch.stack([features for features, _ in passes], dim=1)
    return CachedFeatures(TensorDataset(train_features, passes[0][1]), evaluation)


class RandomView(Dataset):
    """Cached training features: one of the picture's augmented views, drawn at every access."""

    def __init__(self, features: TensorDataset):
        self.views, self.labels = features.tensors

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.views[index, torch.randint(self.views.size(1), ()).item()], self.labels[index]


def feature_loaders(features: CachedFeatures, batch_size: int, seed: int | None) -> dict[str, DataLoader]:
    return {"train": make_loader(RandomView(features.train), batch_size, True, seed=seed),
            **{split: make_loader(data, batch_size, False) for split, data in features.evaluation.items()}}
