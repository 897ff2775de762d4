"""Fast paths: pictures decoded once and kept in memory, and cached features of a truly frozen backbone.

The recipe does not change: the same crops, flips and normalisation, the same batch size, optimiser and
schedule. What goes is the work the tutorial's loop repeats every epoch: decoding every JPEG and, for a
frozen backbone, running the backbone again.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

from core.data import DatasetScan, make_loader, make_loaders
from core.device import autocast, to_input
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
    total = len(scan.samples["val"]) * 3 * EVAL_TRANSFORM.crop_size**2
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
    """A data set decoded once: training pictures to augment, validation crops ready to normalise.

    `storage` is where the pictures live and are cropped: the training device when the loaders run in
    this process (on CUDA the pictures and their augmentation then stay on the GPU), else the CPU.
    """

    def __init__(self, scan: DatasetScan, storage: torch.device | str = "cpu"):
        paths, labels = zip(*scan.samples["train"])
        pictures, sizes = zip(*map(decode, paths))
        self.train = AugmentedPictures([picture.to(storage) for picture in pictures], list(sizes), list(labels))
        val_crops = torch.stack([decode_eval(path) for path, _ in scan.samples["val"]]).to(storage)
        self.val = TensorDataset(val_crops, torch.tensor([label for _, label in scan.samples["val"]], device=storage))

    def loaders(self, batch_size: int, workers: int = 0, seed: int | None = None,
                shuffle: bool = True) -> dict[str, DataLoader]:
        return {"train": make_loader(self.train, batch_size, shuffle, workers, seed),
                "val": make_loader(self.val, batch_size, False, workers)}


def decoded_loaders(scan: DatasetScan, batch_size: int, workers: int | None, seed: int | None, device: torch.device,
                    shuffle: bool = True) -> dict[str, DataLoader]:
    """Loaders of pictures decoded once, or, when they would take more than MEMORY_BUDGET, read from disk."""
    if decoded_bytes(scan) > MEMORY_BUDGET:
        return make_loaders(scan, batch_size, workers, seed, shuffle)
    workers = workers or 0  # the pictures are ready: loader processes would only take cores from the model
    storage = device if device.type == "cuda" and workers == 0 else torch.device("cpu")
    return InMemoryData(scan, storage).loaders(batch_size, workers, seed, shuffle)


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


@torch.no_grad()
def extract_features(
    built: BuiltModel, train: DataLoader, val: DataLoader, views: int, device: torch.device, *,
    progress: Progress | None = None, channels_last: bool = False, dtype: torch.dtype | None = None,
) -> tuple[TensorDataset, TensorDataset]:
    """Backbone features of every validation picture, and of `views` passes over the (augmenting, unshuffled)
    training loader: a training set of (picture, views, features) and a validation set of (picture, features)."""
    batches, done = views * len(train) + len(val), 0

    def features_of(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal done
        outputs, labels = [], []
        for inputs, targets in loader:
            with autocast(device, dtype):
                outputs.append(model(to_input(inputs, device, channels_last)).float())
            labels.append(targets.to(device))
            done += 1
            if progress:
                progress("features", done, batches)
        return torch.cat(outputs), torch.cat(labels)

    with headless(built) as model:
        model = fuse(model.eval())  # a copy with BatchNorm folded into the convolutions: same features, sooner
    if channels_last:
        model.to(memory_format=torch.channels_last)
    passes = [features_of(model, train) for _ in range(views)]
    val_features, val_labels = features_of(model, val)
    train_features = torch.stack([features for features, _ in passes], dim=1)
    return TensorDataset(train_features, passes[0][1]), TensorDataset(val_features, val_labels)


class RandomView(Dataset):
    """Cached training features: one of the picture's augmented views, drawn at every access."""

    def __init__(self, features: TensorDataset):
        self.views, self.labels = features.tensors

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.views[index, torch.randint(self.views.size(1), ()).item()], self.labels[index]


def feature_loaders(train: TensorDataset, val: TensorDataset, batch_size: int,
                    seed: int | None) -> dict[str, DataLoader]:
    return {"train": make_loader(RandomView(train), batch_size, True, seed=seed),
            "val": make_loader(val, batch_size, False)}
