"""Export a saved run as a self-contained bundle: the model (ONNX, PyTorch's `torch.export` .pt2, or legacy
TorchScript), its classes, its preprocessing and a model card, in one zip that needs neither this project nor
torchvision to use."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError, ImageError, StudioError
from core.images import open_image
from core.models import get_backbone, get_scenario
from core.presets import EvalPreset
from core.runs import RunRecord, load_model
from core.staging import abandoned, remove, staging_file, staging_pattern, sync_folder

# format -> the model's file in the bundle, in the order offered. pt2 is PyTorch's current format (torch.export);
# TorchScript is kept for older users only: PyTorch deprecates it, and torch.jit.load warns so.
FORMATS = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}
LEGACY_FORMATS = frozenset({"torchscript"})
_LOADING = {  # how the bundle's model is loaded, for its model card
    "onnx": "ONNX; run it with `onnxruntime.InferenceSession(path)`",
    "pt2": "PyTorch's `torch.export` program; load it with `torch.export.load(path).module()`",
    "torchscript": "TorchScript, **legacy**: deprecated by PyTorch (`torch.jit.load` warns so); prefer the onnx or "
                   "pt2 format. Load it with `torch.jit.load(path)`"}
TOLERANCE = 1e-4  # largest accepted difference of any probability between the bundle and PyTorch
_BUNDLE_NAME = rf"[^/]+-(?:{'|'.join(FORMATS)})\.zip"  # RUN-ID-FORMAT.zip
STAGED = staging_pattern(_BUNDLE_NAME)  # .RUN-ID-FORMAT.zip.xxxxxxxx.partial, from staging_file
OLD_PARTIAL = re.compile(rf"{_BUNDLE_NAME}\.partial")  # RUN-ID-FORMAT.zip.partial, from older versions
OLD_PARTIAL_AGE_S = 3600


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
    skipped_pictures: list[Path] = field(default_factory=list)  # missing, unreadable or outside the data set


def preprocessing(run: RunRecord) -> dict:
    """What bundle.json says a picture goes through: the run's (its backbone's) resize, crop and normalisation."""
    preset = run.preprocessing
    return {"resize_shorter_side": preset.resize, "center_crop": preset.crop, "interpolation": preset.interpolation,
            "mean": list(preset.mean), "std": list(preset.std),
            "input": f"float32 N x 3 x {preset.crop} x {preset.crop}, RGB scaled to [0, 1], then "
                     "(x - mean) / std",
            "output": "float32 N x classes: probabilities"}


def _export_model(network: nn.Module, fmt: str, path: Path, side: int) -> None:
    # An example batch of 2: torch.export takes a batch of 1 for a constant (a vision transformer's class token,
    # expanded to the batch, then stays of 1).
    example = torch.zeros(2, 3, side, side)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters warn about their own future, not about this model
        if fmt == "onnx":
            torch.onnx.export(network, (example,), str(path), input_names=["image"], output_names=["probabilities"],
                              dynamic_shapes={"image": {0: batch}}, dynamo=True, verbose=False, external_data=False)
        elif fmt == "pt2":
            program = torch.export.export(network, (example,), dynamic_shapes={"image": {0: batch}})
            torch.export.save(program, str(path))
        else:
            torch.jit.save(torch.jit.trace(network, example), str(path))


def _bundle_runner(fmt: str, model_bytes: bytes):
    """A function from a batch (numpy) to probabilities, using only the bundle's own runtime."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        return lambda batch: session.run(None, {"image": batch})[0]
    if fmt == "pt2":
        program = torch.export.load(io.BytesIO(model_bytes)).module()

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return program(torch.from_numpy(batch)).numpy()

        return run
    with warnings.catch_warnings():  # legacy TorchScript: torch.jit.load warns that it is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(io.BytesIO(model_bytes))
    return lambda batch: scripted(torch.from_numpy(batch)).detach().numpy()


def _read_picture(path: Path, root: Path, preset: EvalPreset) -> torch.Tensor | None:
    """The picture ready for the network; None when it is missing, unreadable, not a regular file or outside
    `root` (run.json is only data: its paths are not trusted to stay in the data set)."""
    try:
        path = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return None
    if not (path.is_relative_to(root) and path.is_file()):
        return None
    try:
        return preset(open_image(path))
    except ImageError:
        return None


def _validation_batch(run: RunRecord, limit: int) -> tuple[np.ndarray | None, list[Path]]:
    """Up to `limit` validation pictures as a batch, and the pictures passed over on the way."""
    root, preset = run.dataset.root.resolve(), run.preprocessing.eval()
    tensors, skipped = [], []
    for picture in run.val_pictures():
        if len(tensors) == limit:
            break
        tensor = _read_picture(picture.path, root, preset)
        if tensor is None:
            skipped.append(picture.path)
        else:
            tensors.append(tensor)
    return (torch.stack(tensors).numpy() if tensors else None), skipped


def check_parity(expected: np.ndarray, got: np.ndarray, run_id: str, fmt: str) -> float:
    """The largest difference between the bundle's probabilities (`got`) and PyTorch's, or StudioError when
    either holds NaN or infinity or they differ by more than TOLERANCE."""
    if not np.isfinite(expected).all():
        raise StudioError(f"Run {run_id} outputs NaN or infinity: its weights are damaged or training diverged. "
                          f"No {fmt} bundle was written; train the run again (with a lower learning rate if it "
                          "diverged).")
    if not np.isfinite(got).all():
        raise StudioError(f"The {fmt} export of run {run_id} outputs NaN or infinity where PyTorch does not; it was "
                          "not written. Try another format.")
    difference = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not difference <= TOLERANCE:
        raise StudioError(f"The {fmt} export of run {run_id} differs from PyTorch by {difference:.2e} (more than "
                          f"{TOLERANCE}); it was not written. Try another format.")
    return difference


def model_card(run: RunRecord, fmt: str, paths: bool = True) -> str:
    """The bundle's MODEL_CARD.md; without `paths`, folders and files are named but their paths not shown."""
    scenario, backbone, source = get_scenario(run.scenario), get_backbone(run.backbone), run.weights_source
    counts, preset = run.dataset.counts, run.preprocessing
    split_lines = "\n".join(
        f"| {split} | " + " | ".join(str(per_class.get(name, 0)) for name in run.class_names)
        + f" | {run.dataset.total(split)} |" for split, per_class in counts.items())
    interval = "95% interval {:.3f} to {:.3f}, Wilson, from {} pictures"
    best_val, final_val, test = run.best_val(), run.final_val(), run.test()
    best = (f"{best_val.value:.4f} at epoch {run.best_epoch} "
            f"({interval.format(best_val.low, best_val.high, best_val.n)})" if best_val else "none (no epoch finished)")
    final = (f"{final_val.value:.4f} at epoch {run.final.epoch} "
             f"({interval.format(final_val.low, final_val.high, final_val.n)})" if final_val else "none")
    test_line = (f"\n- **Test**: {test.value:.4f} ({interval.format(test.low, test.high, test.n)}): the exported "
                 "weights on the test split, which no choice during training looked at." if test else "")
    config = run.config
    return f"""# Model card: {run.id}

- **Task**: classify a picture as one of {len(run.class_names)} classes: {', '.join(run.class_names)}.
- **Backbone**: {backbone.title} (torchvision `{backbone.name}`), new last layer of {len(run.class_names)} outputs.
- **Scenario**: {scenario.title} (`{scenario.name}`): {scenario.description}
- **Starting weights**: {source.describe(paths) if source.kind != 'none' else 'none (random initialisation)'}
  {f'torchvision name `{source.torchvision_name}`; ' if source.torchvision_name else ''}sha256 `{source.sha256 or '-'}`
- **Format**: {fmt} (`{FORMATS[fmt]}`): {_LOADING[fmt]}. Input and output in `bundle.json`.

## Data

Data set: `{run.dataset.path if paths else run.dataset.root.name}`

| split | {' | '.join(run.class_names)} | total |
|---|{'---|' * len(run.class_names)}---|
{split_lines}

## Training

Recipe `{config.recipe}`: {_recipe_text(run)}; batch {config.batch_size}, {config.epochs} epochs planned,
{len(run.history)} trained (status: {run.status}), seed {config.seed}.
Training time {run.seconds:.1f} s on {run.device}.

## Accuracy

- **Best**: {best}. These are the exported weights: as in the PyTorch tutorial, the epoch with the highest
  validation accuracy is kept, so this figure was used to select the model and is optimistic.
- **Final**: {final} (the last epoch trained).{test_line}

## Preprocessing

Resize the shorter side to {preset.resize} pixels ({preset.interpolation}), center-crop {preset.crop} x {preset.crop},
scale RGB to [0, 1], normalise with mean {list(preset.mean)} and std {list(preset.std)}.
The output is a probability per class.

## Limits

Trained on {run.dataset.total('train') or 'a few'} pictures: expect mistakes on pictures unlike them.
"""


def _recipe_text(run: RunRecord) -> str:
    """The run's phases in words: what trained, how long, with which optimiser, schedule and peak rates."""
    config = run.config
    loss = (f"cross-entropy with label smoothing {config.label_smoothing}" if config.label_smoothing
            else "cross-entropy")
    phases = "; ".join(
        f"{phase.name}: {phase.trains}, " + (f"{phase.epochs} epochs" if phase.epochs else "fitted to convergence")
        + f", {phase.optimizer}, {phase.schedule}, rates "
        + ", ".join(f"{group} {rate:g}" for group, rate in phase.rates.items()) for phase in run.phase_records())
    return f"{phases}; {loss}, weight decay {config.weight_decay}"


def _card_bytes(run: RunRecord, fmt: str, paths: bool) -> bytes:
    # A class or folder name read from a file system of another encoding holds lone surrogates ("\udcff"),
    # which UTF-8 cannot encode. Written as that escape, the card stays valid UTF-8 that any viewer opens, and
    # the name reads exactly as json.dumps writes it in bundle.json.
    return model_card(run, fmt, paths).encode("utf-8", "backslashreplace")


def _remove_abandoned_partials(out_dir: Path) -> None:
    """Partial bundles of exports that died: hidden locked ones, and older versions' unlocked ones once they
    are an hour old (their writer cannot be told from a dead one by a lock)."""
    for leftover, _lock in abandoned(out_dir, STAGED):
        remove(leftover)
    for leftover, _lock in abandoned(out_dir, OLD_PARTIAL):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > OLD_PARTIAL_AGE_S:
                remove(leftover)


def _write_bundle(target: Path, files: dict[str, bytes]) -> None:
    """Write the zip under a unique hidden name beside `target`, then rename it into place: readers see the
    whole bundle or none, and two exports of one run into one folder do not meet. The model is stored as it is:
    deflating float weights saves about 7% and took 19 s for VGG-11's 531 MB."""
    with staging_file(target) as partial:
        with open(partial, "wb") as stream:
            with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
                for name, data in files.items():
                    bundle.writestr(name, data, zipfile.ZIP_STORED if name in FORMATS.values() else None)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, target)
    sync_folder(target.parent)


def _write_failure(exc: Exception) -> str:
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return "a file is in the way of the folder"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def export_run(run: RunRecord, fmt: str, out_dir: Path, check_pictures: int = 32, paths: bool = True) -> ExportResult:
    """Write RUN-ID-FORMAT.zip into out_dir and check it against PyTorch on validation pictures. Pictures that
    are missing or unreadable are skipped and listed; with none left, it is checked on a plain grey picture
    only, and max_difference is None. Without `paths` the model card shows no folder or file paths (a shared
    server's bundles)."""
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    started = time.perf_counter()
    network = Probabilities(load_model(run, "cpu")).eval()
    with tempfile.TemporaryDirectory() as work:
        model_path = Path(work) / FORMATS[fmt]
        try:
            _export_model(network, fmt, model_path, run.preprocessing.crop)
        except Exception as exc:  # exporters raise many types; the user needs the reason
            raise StudioError(f"Exporting run {run.id} to {fmt} failed: {type(exc).__name__}: {exc}") from exc
        model_bytes = model_path.read_bytes()
    batch, skipped = _validation_batch(run, check_pictures)
    checked = 0 if batch is None else len(batch)
    if batch is None:  # zeros are the mean colour once normalised: still catches NaN and a broken export
        batch = np.zeros((1, 3, run.preprocessing.crop, run.preprocessing.crop), dtype=np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(batch)).numpy()
    difference = check_parity(expected, _bundle_runner(fmt, model_bytes)(batch), run.id, fmt)
    max_difference = difference if checked else None
    metadata = {"run": run.id, "format": fmt, "model": FORMATS[fmt], "classes": run.class_names,
                "preprocessing": preprocessing(run), "scenario": run.scenario, "backbone": run.backbone,
                "best_val_acc": run.best_val_acc, "test_acc": run.test().value if run.test() else None,
                "checked_against_pytorch": {
                    "pictures": checked, "max_probability_difference": max_difference}}
    out_dir = Path(out_dir)
    target = out_dir / f"{run.id}-{fmt}.zip"
    files = {FORMATS[fmt]: model_bytes, "bundle.json": json.dumps(metadata, indent=2).encode(),
             "MODEL_CARD.md": _card_bytes(run, fmt, paths)}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_partials(out_dir)
        _write_bundle(target, files)
    except (OSError, RuntimeError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        reason = _write_failure(exc)
        raise StudioError(f"Cannot write the bundle {target.name} into {out_dir} ({reason}); nothing was left "
                          "there. Choose another folder, or free space in this one if it is full.") from exc
    return ExportResult(target, fmt, time.perf_counter() - started, max_difference, checked, skipped)
