"""Why a model is wrong: per-class metrics, the pictures of a confusion cell, the worst mistakes, where two runs
disagree, and maps of the features a model sees.

Metrics and disagreements come from the predictions saved with each run. Losses and features need the run's model
on its validation pictures (core.features): computed once per run and kept in its folder (ANALYSIS_FILE).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.features import PictureOutputs, Progress, cached_outputs, fingerprint, picture_outputs
from core.models import head_layer
from core.runs import Predictions, RunRecord, ValPrediction, load_model, picture_path
from core.stats import mcnemar

ANALYSIS_FILE = "outputs-{split}.pt"  # in a run's folder: its model's features and logits on that split
MAP_METHODS = {"pca": "PCA", "tsne": "t-SNE"}


# ---------------------------------------------------------------- from the saved predictions

@dataclass(frozen=True)
class ClassMetrics:
    name: str
    precision: float  # of the pictures predicted as this class, the share that are
    recall: float  # of the pictures of this class, the share found
    f1: float
    support: int  # pictures of this class


def class_metrics(predictions: Predictions, class_names: list[str]) -> list[ClassMetrics]:
    """Precision, recall, F1 and support per class (scikit-learn); a class never predicted has precision 0."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        predictions.labels, predictions.predictions, labels=list(range(len(class_names))), zero_division=0)
    return [ClassMetrics(name, float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]


def cell_pictures(run: RunRecord, actual: int, predicted: int) -> list[ValPrediction]:
    """The validation pictures of one confusion-matrix cell: of class `actual`, predicted as `predicted`."""
    return [picture for picture in run.val_pictures() if (picture.label, picture.predicted) == (actual, predicted)]


@dataclass(frozen=True)
class Disagreement:
    file: str
    label: int
    first: int  # the first run's prediction
    second: int  # the second run's


@dataclass
class Disagreements:
    """Where two runs on the same validation pictures part: one right and the other wrong."""

    first_only: list[Disagreement]  # the first run right, the second wrong
    second_only: list[Disagreement]  # the second right, the first wrong
    both_wrong: int
    pictures: int  # shared by both runs

    @property
    def p_value(self) -> float:
        """McNemar's exact test: how often counts this uneven would come from two equally good models."""
        return mcnemar(len(self.first_only), len(self.second_only))


def disagreements(first: RunRecord, second: RunRecord) -> Disagreements | None:
    """The validation pictures on which one run is right and the other wrong; None when the two runs share no
    validation picture (another data set) or have no saved predictions."""
    if (not first.val_predictions or not second.val_predictions or first.class_names != second.class_names
            or first.dataset.root != second.dataset.root):
        return None
    theirs = {file: (label, guess) for file, label, guess in zip(
        second.val_predictions.files, second.val_predictions.labels, second.val_predictions.predictions)}
    result = Disagreements([], [], 0, 0)
    for file, label, guess in zip(first.val_predictions.files, first.val_predictions.labels,
                                  first.val_predictions.predictions):
        if file not in theirs or theirs[file][0] != label:
            continue
        result.pictures += 1
        other = theirs[file][1]
        if (guess == label) != (other == label):
            (result.first_only if guess == label else result.second_only).append(
                Disagreement(file, label, guess, other))
        elif guess != label:
            result.both_wrong += 1
    return result if result.pictures else None


# ---------------------------------------------------------------- from the run's model

@dataclass(frozen=True)
class Loss:
    file: str
    label: int
    predicted: int
    probability: float  # the model's probability of its prediction
    loss: float  # cross-entropy: -log(probability of the true class)


def run_outputs(run: RunRecord, split: str = "val", device: torch.device | str = "cpu",
                progress: Progress | None = None, only_kept: bool = False) -> PictureOutputs | None:
    """The run's model on its `split` pictures (as saved with the run): the features its head sees and its logits,
    kept in the run's folder until a picture changes (with `only_kept`, None when they are not kept)."""
    predictions = run.val_predictions if split == "val" else run.test_predictions
    files = [file for file in (predictions.files if predictions else []) if picture_path(run.dataset.root, file)]
    key = f"{run.id}-{split}-{fingerprint(run.dataset.root, files)}"

    def compute() -> PictureOutputs:
        model = load_model(run, device)
        return picture_outputs(model, model.get_submodule(head_layer(model)), run.dataset.root, files, device,
                               progress, run.preprocessing)

    return cached_outputs(Path(run.path) / ANALYSIS_FILE.format(split=split), key, None if only_kept else compute)


def losses(run: RunRecord, outputs: PictureOutputs) -> list[Loss]:
    """Every picture of `outputs` with its loss, the highest first."""
    labels = dict(zip(run.val_predictions.files, run.val_predictions.labels)) if run.val_predictions else {}
    probabilities = outputs.probabilities
    found = []
    for row, file in enumerate(outputs.files):
        if file not in labels:
            continue
        label, predicted = labels[file], int(probabilities[row].argmax())
        found.append(Loss(file, label, predicted, float(probabilities[row, predicted]),
                          float(-np.log(max(probabilities[row, label], 1e-12)))))
    return sorted(found, key=lambda item: -item.loss)


def feature_map(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """The features in two dimensions (pictures, 2): PCA, or t-SNE (scikit-learn) for local neighbourhoods."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in MAP_METHODS:
        raise ValueError(f"Unknown map {method!r}; choose one of: {', '.join(MAP_METHODS)}.")
    count = len(features)
    if count < 3:
        return np.zeros((count, 2), np.float32)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if method == "pca":
        mapped = PCA(n_components=2, random_state=seed).fit_transform(unit)
    else:
        perplexity = min(30.0, (count - 1) / 3)
        mapped = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(unit)
    return mapped.astype(np.float32)
