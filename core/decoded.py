"""Pictures decoded once, cropped and flipped as the backbone's transforms would (core.presets): kept in memory for
training, or streamed, each decoded once with all its augmented views, for a frozen backbone's features.

What goes is the work the tutorial's loop repeats every epoch: decoding every JPEG. The recipe does not change: the
same crops, flips and normalisation (core.presets), drawn with the same random numbers. Decoding runs on threads
(core.parallel).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import ExifTags, Image
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

from core.data import DatasetScan
from core.errors import ImageError
from core.images import open_image
from core.parallel import in_order
from core.presets import EVAL_TRANSFORM, TRAIN_TRANSFORM, TUTORIAL_PREPROCESSING, EvalPreset, Preprocessing, TrainPreset


def max_short_side(preset: TrainPreset) -> int:
    """Pictures are kept at most this large on their shorter side: the smallest crop RandomResizedCrop takes (the
    smallest scale at the narrowest ratio) is then still `crop_size` pixels or more, so every crop is a downscale,
    as from the original file, and sees the same detail. Crops are drawn on the original size and scaled (see
    `cropped`), so they fall where the tutorial's fall. Most photos are smaller and kept whole."""
    return math.ceil(preset.crop_size / math.sqrt(preset.scale[0] * preset.ratio[0]))


@dataclass(frozen=True)
class Crop:
    """Where a training preset's random crop falls on a picture of its original size, and whether it is flipped."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def draw_crop(size: tuple[int, int], preset: TrainPreset = TRAIN_TRANSFORM) -> Crop:
    """`preset`'s random crop and flip of a picture of `size` (height, width), drawn by its own code with its random
    numbers: for a given seed it falls where the tutorial's falls."""
    top, left, height, width = RandomResizedCrop.get_params(torch.empty(()).expand(3, *size), preset.scale,
                                                             preset.ratio)
    return Crop(top, left, height, width, bool(torch.rand(1) < preset.hflip_prob))


def cropped(picture: torch.Tensor, size: tuple[int, int], crop: Crop, preset: TrainPreset = TRAIN_TRANSFORM
            ) -> torch.Tensor:
    """`crop` of a stored uint8 picture whose original was `size`: drawn on the original, scaled to the stored one,
    resized to the preset's crop size with its interpolation."""
    fy, fx = picture.shape[-2] / size[0], picture.shape[-1] / size[1]
    side = preset.crop_size
    out = F2.resized_crop(picture, round(crop.top * fy), round(crop.left * fx), max(1, round(crop.height * fy)),
                          max(1, round(crop.width * fx)), [side, side], interpolation=preset.interpolation,
                          antialias=True)
    return F2.horizontal_flip(out) if crop.flip else out


def augment(picture: torch.Tensor, size: tuple[int, int], preset: TrainPreset = TRAIN_TRANSFORM) -> torch.Tensor:
    """`preset`'s random crop and flip of a stored uint8 picture whose original was `size` (height, width)."""
    return cropped(picture, size, draw_crop(size, preset), preset)


def decode(path: Path, preset: TrainPreset = TRAIN_TRANSFORM) -> tuple[torch.Tensor, tuple[int, int]]:
    """A picture as `open_image` reads it, as a uint8 (3, H, W) tensor shrunk to `max_short_side` if larger,
    and its original (height, width)."""
    image = open_image(path)
    size = (image.height, image.width)
    if min(size) > max_short_side(preset):
        image = F.resize(image, max_short_side(preset), interpolation=preset.interpolation)
    return F.pil_to_tensor(image), size


def decode_eval(path: Path, preset: EvalPreset = EVAL_TRANSFORM) -> torch.Tensor:
    """`preset`'s resize and centre crop as uint8 (3, crop, crop); `to_input` of it is the preset's result."""
    return F.pil_to_tensor(preset.geometry(open_image(path)))


def picture_size(path: Path) -> tuple[int, int]:
    """(height, width) of a picture as `open_image` turns it upright, read from its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path} cannot be read any more ({exc}): scan the data set again.") from exc
    return (width, height) if turned else (height, width)


def training_views(path: Path, size: tuple[int, int], crops: list[Crop], preset: TrainPreset = TRAIN_TRANSFORM
                   ) -> torch.Tensor:
    """The picture decoded once and each of `crops` of it: uint8 (views, 3, crop, crop)."""
    picture, _ = decode(path, preset)
    return torch.stack([cropped(picture, size, crop, preset) for crop in crops])


def decoded_bytes(scan: DatasetScan, preprocessing: Preprocessing = TUTORIAL_PREPROCESSING) -> int:
    """What the decoded pictures of `scan` take in memory, from the picture headers."""
    evaluated = sum(len(scan.samples[split]) for split in scan.evaluation_splits)
    total = evaluated * 3 * preprocessing.crop**2
    largest = max_short_side(preprocessing.train())
    for height, width in in_order(picture_size, [path for path, _ in scan.samples["train"]]):
        shrink = min(1.0, largest / min(width, height))
        total += 3 * round(width * shrink) * round(height * shrink)
    return total


Samples = list[tuple[Path, int]]  # (picture, label), as a DatasetScan lists them


def view_batches(samples: Samples, indices: list[int], views: int, batch_size: int,
                 preset: TrainPreset = TRAIN_TRANSFORM) -> Iterator[torch.Tensor]:
    """uint8 batches of `batch_size` crops: the `views` augmented views of each picture at `indices`, one after the
    other, each picture decoded once and dropped (none is kept). The crops are drawn now, before the first batch, in
    the order of `views` passes over the pictures: for a given seed they are those of `views` passes of a seeded,
    unshuffled DataLoader over pictures kept in memory (AugmentedPictures)."""
    sizes = list(in_order(picture_size, [samples[index][0] for index in indices]))
    crops: list[list[Crop]] = [[] for _ in indices]
    for _ in range(views):
        for picture_crops, size in zip(crops, sizes):
            picture_crops.append(draw_crop(size, preset))
    jobs = [(samples[index][0], size, picture_crops, preset)
            for index, size, picture_crops in zip(indices, sizes, crops)]
    return _rebatched(in_order(lambda job: training_views(*job), jobs), batch_size)


def eval_batches(samples: Samples, indices: list[int], batch_size: int, preset: EvalPreset = EVAL_TRANSFORM
                 ) -> Iterator[torch.Tensor]:
    """uint8 batches of `batch_size` validation crops (`decode_eval`) of the pictures at `indices`."""
    return _rebatched(in_order(lambda index: decode_eval(samples[index][0], preset)[None], indices), batch_size)


def _rebatched(stacks: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    waiting: list[torch.Tensor] = []
    for stack in stacks:
        waiting += stack.unbind(0)
        while len(waiting) >= batch_size:
            yield torch.stack(waiting[:batch_size])
            del waiting[:batch_size]
    if waiting:
        yield torch.stack(waiting)


class AugmentedPictures(Dataset):
    """Decoded pictures with a training preset's random crop and flip, drawn anew at every access."""

    def __init__(self, pictures: list[torch.Tensor], sizes: list[tuple[int, int]], labels: list[int],
                 preset: TrainPreset = TRAIN_TRANSFORM):
        self.pictures, self.sizes, self.labels, self.preset = pictures, sizes, labels, preset

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int):
        return augment(self.pictures[index], self.sizes[index], self.preset), self.labels[index]


class InMemoryData:
    """A data set decoded once: training pictures to augment, validation (and test) crops ready to normalise.

    `storage` is where the pictures live and are cropped: the training device when the loaders run in
    this process (on CUDA the pictures and their augmentation then stay on the GPU), else the CPU.
    """

    def __init__(self, scan: DatasetScan, storage: torch.device | str = "cpu",
                 preprocessing: Preprocessing = TUTORIAL_PREPROCESSING):
        train, evaluation = preprocessing.train(), preprocessing.eval()
        paths, labels = zip(*scan.samples["train"])
        pictures, sizes = zip(*in_order(lambda path: decode(path, train), paths))
        self.train = AugmentedPictures([picture.to(storage) for picture in pictures], list(sizes), list(labels), train)
        self.evaluation = {}
        for split in scan.evaluation_splits:
            paths = [path for path, _ in scan.samples[split]]
            crops = torch.stack(list(in_order(lambda path: decode_eval(path, evaluation), paths))).to(storage)
            labels = torch.tensor([label for _, label in scan.samples[split]], device=storage)
            self.evaluation[split] = TensorDataset(crops, labels)
