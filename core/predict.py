"""Prediction: class probabilities for one picture from a trained model."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.images import ImageSource, open_image
from core.presets import TUTORIAL_PREPROCESSING, Preprocessing
from core.runs import RunRecord, load_model


def model_input(source: ImageSource, name: str | None = None,
                preprocessing: Preprocessing = TUTORIAL_PREPROCESSING) -> torch.Tensor:
    """A picture as a batch of one, preprocessed as a run's validation pictures are (its backbone's preprocessing,
    the tutorial's by default).

    Large JPEGs are decoded at a reduced scale that keeps the shorter side at least the transform's resize size,
    which it then resizes to anyway: a 12-megapixel photo is ready about three times sooner, nearly unchanged
    (docs/performance.md).
    """
    preset = preprocessing.eval()
    return preset(open_image(source, name, at_least=preset.resize_size)).unsqueeze(0)


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]  # class name -> probability, in the model's class order

    @property
    def top_class(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def top_probability(self) -> float:
        return self.probabilities[self.top_class]


@dataclass
class Predictor:
    model: nn.Module
    class_names: list[str]
    device: torch.device
    preprocessing: Preprocessing = TUTORIAL_PREPROCESSING

    @torch.no_grad()
    def predict(self, source: ImageSource, name: str | None = None) -> Prediction:
        """Classify a file path, bytes or PIL image. Raises ImageError for anything that is not a picture."""
        batch = model_input(source, name, self.preprocessing).to(self.device)
        probabilities = torch.softmax(self.model(batch), dim=1)[0].tolist()
        return Prediction(dict(zip(self.class_names, probabilities)))


def load_predictor(run: RunRecord, device: torch.device | str = "cpu") -> Predictor:
    return Predictor(load_model(run, device), list(run.class_names), torch.device(device), run.preprocessing)
