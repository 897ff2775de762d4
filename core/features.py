"""What a network sees in pictures: the features its head is given and its answers (logits), for a list of picture
files, kept on disk so that the second look is instant.

Pictures are prepared as validation pictures are (the backbone's resize and centre crop, core.presets). Used for a
saved run's model (core.analysis) and for an untouched ImageNet backbone (core.health, and the feature maps'
reference).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core import staging
from core.decoded import decode_eval
from core.device import Compute, forward_batch_size
from core.errors import ImageError, WeightsError
from core.models import build_model, get_backbone, head_layer
from core.parallel import in_order
from core.presets import TUTORIAL_PREPROCESSING, Preprocessing

Progress = Callable[[int, int], None]  # (pictures done, pictures in all)


@dataclass
class PictureOutputs:
    """Per picture (rows in `files` order): the features the head sees, and the head's logits."""

    files: list[str]  # relative to the data set's folder
    features: np.ndarray  # (pictures, features), float32
    logits: np.ndarray  # (pictures, classes), float32
    unreadable: list[str]  # files that could not be read now (removed or damaged since the scan): not in `files`

    def rows(self, files: list[str]) -> np.ndarray:
        """Row numbers of `files` (those present), in their order."""
        position = {file: row for row, file in enumerate(self.files)}
        return np.array([position[file] for file in files if file in position], dtype=int)

    @property
    def probabilities(self) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits), dim=1).numpy()


def fingerprint(root: Path, files: list[str]) -> str:
    """Changes when a picture of `files` is added, removed, rewritten or touched."""
    digest = hashlib.sha256()
    for file in files:
        try:
            stat = (Path(root) / file).stat()
            digest.update(json.dumps([file, stat.st_size, stat.st_mtime_ns]).encode())
        except OSError:
            digest.update(json.dumps([file, None]).encode())
    return digest.hexdigest()


@torch.no_grad()
def picture_outputs(model: nn.Module, head: nn.Module, root: Path, files: list[str], device: torch.device | str = "cpu",
                    progress: Progress | None = None, preprocessing: Preprocessing = TUTORIAL_PREPROCESSING
                    ) -> PictureOutputs:
    """`model`'s outputs for each picture prepared with `preprocessing`, the input of its `head` module as the
    features. Pictures that cannot be read are listed as unreadable and left out. The pictures are decoded on
    threads while the model runs."""
    compute = Compute(torch.device(device), mean=preprocessing.mean, std=preprocessing.std)
    preset = preprocessing.eval()
    batch_size = forward_batch_size(compute.device) * 4
    unreadable: list[str] = []

    def crop_of(file: str) -> torch.Tensor | None:
        try:
            return decode_eval(Path(root) / file, preset)
        except ImageError:
            return None

    def batches():
        crops, names = [], []
        for done, (file, crop) in enumerate(zip(files, in_order(crop_of, files)), start=1):
            if crop is None:
                unreadable.append(file)
            else:
                crops.append(crop)
                names.append(file)
            if len(crops) == batch_size or (done == len(files) and crops):
                yield torch.stack(crops), names
                crops, names = [], []
            if progress and (done % batch_size == 0 or done == len(files)):
                progress(done, len(files))

    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    readable, features, logits = [], [], []
    try:
        for outputs, names in compute.outputs(model, batches()):
            logits.append(outputs.cpu())
            features.append(captured[-1].flatten(1))
            readable += names
    finally:
        hook.remove()
        model.train(was_training)
    width = head.in_features if isinstance(head, nn.Linear) else 0
    return PictureOutputs(
        readable, torch.cat(features).numpy() if features else np.zeros((0, width), np.float32),
        torch.cat(logits).numpy() if logits else np.zeros((0, getattr(head, "out_features", 0)), np.float32),
        unreadable)


def kept_outputs(cache: Path, key: str) -> PictureOutputs | None:
    """The outputs saved in `cache` under `key`; None when there are none (missing, damaged, of another version or
    of other pictures)."""
    try:
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key:
            return PictureOutputs(list(saved["files"]), saved["features"].numpy(), saved["logits"].numpy(),
                                  list(saved["unreadable"]))
    except Exception:
        pass
    return None


def cached_outputs(cache: Path, key: str, compute: Callable[[], PictureOutputs] | None) -> PictureOutputs | None:
    """The outputs saved in `cache` under `key`, or `compute()`d and saved there (None without `compute`). A cache
    that cannot be read is computed again; one that cannot be written is only not kept."""
    if (kept := kept_outputs(cache, key)) is not None or compute is None:
        return kept
    outputs = compute()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with staging.staging_file(cache) as partial:
            torch.save({"key": key, "files": outputs.files, "features": torch.from_numpy(outputs.features),
                        "logits": torch.from_numpy(outputs.logits), "unreadable": outputs.unreadable}, partial)
            partial.rename(cache)
    except OSError:
        pass
    return outputs


def imagenet_outputs(backbone_name: str, root: Path, files: list[str], cache_dir: Path,
                     weights: str | Path | None = None, device: torch.device | str = "cpu",
                     progress: Progress | None = None, part: str = "",
                     only_kept: bool = False) -> PictureOutputs | None:
    """The untouched ImageNet backbone's features of the pictures (its logits, of an untrained head, mean nothing),
    cached in `cache_dir`, apart from those of the data set's other `part`s (with `only_kept`, None when they are not
    kept). Raises WeightsError when its weights can be neither found nor downloaded."""
    get_backbone(backbone_name)
    key = f"imagenet-{backbone_name}-{fingerprint(root, files)}"

    def compute() -> PictureOutputs:
        built = build_model(backbone_name, "frozen", 2, weights)
        if built.weights_source.kind == "none":
            raise WeightsError(f"No ImageNet weights for {backbone_name}.")
        model = built.model.to(device)
        return picture_outputs(model, model.get_submodule(head_layer(model)), root, files, device, progress,
                               built.backbone.preprocessing)

    return cached_outputs(Path(cache_dir) / f"imagenet-{backbone_name}{'-' + part if part else ''}.pt", key,
                          None if only_kept else compute)
