"""The transforms as presets with named parameters (as torchvision's references/classification presets.py), the
only definition of them in the project. A backbone's `Preprocessing` (resize, crop, interpolation, mean, std: what
its torchvision weights state, core.backbones) makes its presets; the tutorial's are those of its 2017 weights. The
fast paths read the parameters by name."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torchvision import transforms
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SIZE = 224
RESIZE_SIZE = 256


class TrainPreset:
    """RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize: the tutorial's training transform."""

    def __init__(self, *, crop_size: int = CROP_SIZE, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip_prob: float = 0.5,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        self.crop_size, self.scale, self.ratio, self.hflip_prob = crop_size, scale, ratio, hflip_prob
        self.interpolation, self.mean, self.std = interpolation, mean, std
        self.transforms = transforms.Compose([
            transforms.RandomResizedCrop(crop_size, scale=scale, ratio=ratio, interpolation=interpolation),
            transforms.RandomHorizontalFlip(hflip_prob),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ])

    def __call__(self, image):
        return self.transforms(image)


class EvalPreset:
    """Resize, CenterCrop, ToTensor, Normalize: the tutorial's validation transform."""

    def __init__(self, *, resize_size: int = RESIZE_SIZE, crop_size: int = CROP_SIZE,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        self.resize_size, self.crop_size, self.interpolation = resize_size, crop_size, interpolation
        self.mean, self.std = mean, std
        self.geometry = transforms.Compose([transforms.Resize(resize_size, interpolation=interpolation),
                                            transforms.CenterCrop(crop_size)])
        self.transforms = transforms.Compose([self.geometry, transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __call__(self, image):
        return self.transforms(image)


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone's pictures go through: resized (shorter side) and centre-cropped for evaluation, randomly
    crop-resized to `crop` for training, with `interpolation`, then normalised with `mean` and `std`."""

    resize: int = RESIZE_SIZE
    crop: int = CROP_SIZE
    interpolation: str = "bilinear"  # torchvision's InterpolationMode value
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def of(cls, preset) -> Preprocessing:
        """From torchvision's ImageClassification preset (a weights enum's `transforms()`)."""
        return cls(int(preset.resize_size[0]), int(preset.crop_size[0]), InterpolationMode(preset.interpolation).value,
                   tuple(float(x) for x in preset.mean), tuple(float(x) for x in preset.std))

    @classmethod
    def from_dict(cls, data: dict | None) -> Preprocessing:
        """As a run recorded it; the tutorial's for a run saved before runs recorded theirs."""
        if not data:
            return TUTORIAL_PREPROCESSING
        return cls(int(data["resize"]), int(data["crop"]), str(data["interpolation"]), tuple(data["mean"]),
                   tuple(data["std"]))

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @property
    def mode(self) -> InterpolationMode:
        return InterpolationMode(self.interpolation)

    def train(self) -> TrainPreset:
        return TrainPreset(crop_size=self.crop, interpolation=self.mode, mean=self.mean, std=self.std)

    def eval(self) -> EvalPreset:
        return EvalPreset(resize_size=self.resize, crop_size=self.crop, interpolation=self.mode, mean=self.mean,
                          std=self.std)

    def describe(self) -> str:
        return f"resize {self.resize}, crop {self.crop}, {self.interpolation}"


TUTORIAL_PREPROCESSING = Preprocessing()
TRAIN_TRANSFORM = TUTORIAL_PREPROCESSING.train()
EVAL_TRANSFORM = TUTORIAL_PREPROCESSING.eval()
