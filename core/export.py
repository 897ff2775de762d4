"""Export a saved run as a self-contained bundle: the model (ONNX or TorchScript), its classes, its
preprocessing and a model card, in one zip that needs neither this project nor torchvision to use."""
from __future__ import annotations

import io
import json
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError, StudioError
from core.images import open_image
from core.models import get_backbone, get_scenario
from core.presets import EVAL_TRANSFORM
from core.runs import RunRecord, load_model

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
TOLERANCE = 1e-4  # largest accepted difference of any probability between the bundle and PyTorch


class Probabilities(nn.Module):
    """The trained network followed by softmax: the bundle outputs class probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(image), dim=1)


@dataclass
class ExportResult:
    path: Path
    format: str
    seconds: float
    max_difference: float | None  # against PyTorch on validation pictures; None when none were found
    pictures_checked: int


def preprocessing() -> dict:
    preset = EVAL_TRANSFORM
    return {"resize_shorter_side": preset.resize_size, "center_crop": preset.crop_size, "mean": list(preset.mean),
            "std": list(preset.std),
            "input": f"float32 N x 3 x {preset.crop_size} x {preset.crop_size}, RGB scaled to [0, 1], then "
                     "(x - mean) / std",
            "output": "float32 N x classes: probabilities"}


def _export_model(network: nn.Module, fmt: str, path: Path) -> None:
    example = torch.zeros(1, 3, EVAL_TRANSFORM.crop_size, EVAL_TRANSFORM.crop_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both exporters warn about their own future, not about this model
        if fmt == "onnx":
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(network, (example,), str(path), input_names=["image"], output_names=["probabilities"],
                              dynamic_shapes={"image": {0: batch}}, dynamo=True, verbose=False, external_data=False)
        else:
            torch.jit.save(torch.jit.trace(network, example), str(path))


def _bundle_runner(fmt: str, model_bytes: bytes):
    """A function from a batch (numpy) to probabilities, using only the bundle's own runtime."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        return lambda batch: session.run(None, {"image": batch})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(io.BytesIO(model_bytes))
    return lambda batch: scripted(torch.from_numpy(batch)).detach().numpy()


def _validation_batch(run: RunRecord, limit: int) -> np.ndarray | None:
    files = [picture.path for picture in run.val_pictures()[:limit]]
    tensors = [EVAL_TRANSFORM(open_image(f)) for f in files if f.is_file()]
    return torch.stack(tensors).numpy() if tensors else None


def model_card(run: RunRecord, fmt: str) -> str:
    scenario, backbone, source = get_scenario(run.scenario), get_backbone(run.backbone), run.weights_source
    counts, preset = run.dataset.counts, EVAL_TRANSFORM
    split_lines = "\n".join(
        f"| {split} | " + " | ".join(str(per_class.get(name, 0)) for name in run.class_names)
        + f" | {run.dataset.total(split)} |" for split, per_class in counts.items())
    best = f"{run.best_val_acc:.4f} at epoch {run.best_epoch}" if run.best_epoch else "none (no epoch finished)"
    final = f"{run.final.val_acc:.4f} at epoch {run.final.epoch}" if run.final else "none"
    config = run.config
    return f"""# Model card: {run.id}

- **Task**: classify a picture as one of {len(run.class_names)} classes: {', '.join(run.class_names)}.
- **Backbone**: {backbone.title} (torchvision `{backbone.name}`), new last layer of {len(run.class_names)} outputs.
- **Scenario**: {scenario.title} (`{scenario.name}`): {scenario.description}
- **Starting weights**: {source.describe() if source.kind != 'none' else 'none (random initialisation)'}
  {f'torchvision name `{source.torchvision_name}`; ' if source.torchvision_name else ''}sha256 `{source.sha256 or '-'}`
- **Format**: {fmt} (`{FORMATS[fmt]}`); input and output in `bundle.json`.

## Data

Data set: `{run.dataset.path}`

| split | {' | '.join(run.class_names)} | total |
|---|{'---|' * len(run.class_names)}---|
{split_lines}

## Training

Recipe: SGD lr {config.lr}, momentum {config.momentum}, StepLR every {config.step_size} epochs by {config.gamma},
cross-entropy, batch {config.batch_size}, {config.epochs} epochs planned, {len(run.history)} trained
(status: {run.status}), seed {config.seed}. Training time {run.seconds:.1f} s on {run.device}.

## Accuracy on the validation split

- **Best**: {best}. These are the exported weights: as in the PyTorch tutorial, the epoch with the highest
  validation accuracy is kept, so this figure was used to select the model and is optimistic.
- **Final**: {final} (the last epoch trained).

## Preprocessing

Resize the shorter side to {preset.resize_size} pixels (bilinear), center-crop {preset.crop_size} x {preset.crop_size},
scale RGB to [0, 1], normalise with mean {list(preset.mean)} and std {list(preset.std)}.
The output is a probability per class.

## Limits

Trained on {run.dataset.total('train') or 'a few'} pictures: expect mistakes on pictures unlike them.
"""


def export_run(run: RunRecord, fmt: str, out_dir: Path, check_pictures: int = 32) -> ExportResult:
    """Write RUN-ID-FORMAT.zip into out_dir and check it against PyTorch on validation pictures."""
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    started = time.perf_counter()
    network = Probabilities(load_model(run, "cpu")).eval()
    with tempfile.TemporaryDirectory() as work:
        model_path = Path(work) / FORMATS[fmt]
        try:
            _export_model(network, fmt, model_path)
        except Exception as exc:  # exporters raise many types; the user needs the reason
            raise StudioError(f"Exporting run {run.id} to {fmt} failed: {type(exc).__name__}: {exc}") from exc
        model_bytes = model_path.read_bytes()
    max_difference, checked = None, 0
    batch = _validation_batch(run, check_pictures)
    if batch is not None:
        with torch.no_grad():
            expected = network(torch.from_numpy(batch)).numpy()
        max_difference, checked = float(np.abs(_bundle_runner(fmt, model_bytes)(batch) - expected).max()), len(batch)
        if max_difference > TOLERANCE:
            raise StudioError(f"The {fmt} export of run {run.id} differs from PyTorch by {max_difference:.2e} "
                              f"(more than {TOLERANCE}); it was not written.")
    metadata = {"run": run.id, "format": fmt, "model": FORMATS[fmt], "classes": run.class_names,
                "preprocessing": preprocessing(), "scenario": run.scenario, "backbone": run.backbone,
                "best_val_acc": run.best_val_acc, "checked_against_pytorch": {
                    "pictures": checked, "max_probability_difference": max_difference}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{run.id}-{fmt}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(FORMATS[fmt], model_bytes)
        bundle.writestr("bundle.json", json.dumps(metadata, indent=2))
        bundle.writestr("MODEL_CARD.md", model_card(run, fmt))
    partial.replace(target)
    return ExportResult(target, fmt, time.perf_counter() - started, max_difference, checked)
