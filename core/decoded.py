"""Pictures decoded once and kept in memory, cropped and flipped as the tutorial's transforms would.

What goes is the work the tutorial's loop repeats every epoch: decoding every JPEG. The recipe does not change: the
same crops, flips and normalisation (core.presets), drawn with the same random numbers.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

from core.data import DatasetScan
from core.images import open_image
from core.presets import EVAL_TRANSFORM, TRAIN_TRANSFORM

# Pictures are kept at most this large on their shorter side: the smallest crop RandomResizedCrop takes
# (the smallest scale at the narrowest ratio) is then still crop_size pixels or more, so every crop is a
# downscale, as from the original file, and sees the same detail. Crops are drawn on the original size and
# scaled (see `augment`), so they fall where the tutorial's fall. Most photos are smaller and kept whole.
MAX_SHORT_SIDE = math.ceil(TRAIN_TRANSFORM.crop_size / math.sqrt(TRAIN_TRANSFORM.scale[0] * TRAIN_TRANSFORM.ratio[0]))
# Above this many bytes of decoded pictures, training reads them from disk every epoch as the tutorial does.
MEMORY_BUDGET = 1 << 30


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
