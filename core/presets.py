"""The tutorial's transforms as presets with named parameters (as torchvision's references/classification
presets.py), the only definition of them in the project. The fast paths read the parameters by name."""
from __future__ import annotations

from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SIZE = 224
RESIZE_SIZE = 256


class TrainPreset:
    """RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize: the tutorial's training transform."""

    def __init__(self, *, crop_size: int = CROP_SIZE, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip_prob: float = 0.5,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        self.crop_size, self.scale, self.ratio, self.hflip_prob = crop_size, scale, ratio, hflip_prob
        self.mean, self.std = mean, std
        self.transforms = transforms.Compose([
            transforms.RandomResizedCrop(crop_size, scale=scale, ratio=ratio),
            transforms.RandomHorizontalFlip(hflip_prob),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ])

    def __call__(self, image):
        return self.transforms(image)


class EvalPreset:
    """Resize, CenterCrop, ToTensor, Normalize: the tutorial's validation transform."""

    def __init__(self, *, resize_size: int = RESIZE_SIZE, crop_size: int = CROP_SIZE,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        self.resize_size, self.crop_size, self.mean, self.std = resize_size, crop_size, mean, std
        self.geometry = transforms.Compose([transforms.Resize(resize_size), transforms.CenterCrop(crop_size)])
        self.transforms = transforms.Compose([self.geometry, transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __call__(self, image):
        return self.transforms(image)


TRAIN_TRANSFORM = TrainPreset()
EVAL_TRANSFORM = EvalPreset()
