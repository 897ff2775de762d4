"""Runs on disk: one folder per run with run.json and model.pt, written atomically."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from core.data import DatasetScan, SkippedFile
from core.errors import RUNS_DIR, RunError
from core.models import TUTORIAL_SCENARIOS, WeightsSource, build_architecture
from core.train import EpochStats, TrainConfig, TrainResult

RUNS_DIR_ENV = "STUDIO_RUNS_DIR"
RUN_FORMAT = 1
METADATA_FILE = "run.json"
WEIGHTS_FILE = "model.pt"


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


@dataclass
class DatasetSummary:
    """What a run was trained on: the data folder, pictures per split and class, and the files skipped."""

    path: str
    counts: dict[str, dict[str, int]]  # {"train": {"ants": 123, ...}, "val": {...}}
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return Path(self.path)

    def total(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    @classmethod
    def from_scan(cls, scan: DatasetScan) -> DatasetSummary:
        return cls(str(Path(scan.root).resolve()), scan.counts(), list(scan.skipped))

    def to_dict(self) -> dict:
        return {"path": self.path, "counts": self.counts,
                "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped]}

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSummary:
        skipped = [SkippedFile(Path(s["path"]), s["reason"]) for s in data.get("skipped", [])]
        return cls(data["path"], data["counts"], skipped)


@dataclass(frozen=True)
class ValPrediction:
    """One validation picture: where it is, its class and the class the saved weights gave it."""

    path: Path
    label: int
    predicted: int

    @property
    def correct(self) -> bool:
        return self.label == self.predicted


@dataclass
class ValPredictions:
    """The saved weights' answers on every validation picture, in the data set's order."""

    files: list[str]  # relative to the data set's folder
    labels: list[int]
    predictions: list[int]

    @property
    def mistakes(self) -> int:
        return sum(label != predicted for label, predicted in zip(self.labels, self.predictions))

    def confusion(self, num_classes: int) -> list[list[int]]:
        """counts[actual][predicted]."""
        counts = [[0] * num_classes for _ in range(num_classes)]
        for label, predicted in zip(self.labels, self.predictions):
            counts[label][predicted] += 1
        return counts

    def pictures(self, root: Path, mistakes_first: bool = False) -> list[ValPrediction]:
        items = [ValPrediction(Path(root) / file, label, predicted)
                 for file, label, predicted in zip(self.files, self.labels, self.predictions)]
        return sorted(items, key=lambda item: item.correct) if mistakes_first else items


@dataclass
class RunRecord:
    """Everything saved about one training run, except the weights themselves."""

    id: str
    created: str
    status: str  # "completed" or "cancelled"
    config: TrainConfig
    class_names: list[str]
    dataset: DatasetSummary
    history: list[EpochStats]
    best_epoch: int | None
    best_val_acc: float
    trainable_params: int
    total_params: int
    weights_source: WeightsSource
    device: str
    seconds: float
    val_predictions: ValPredictions | None = None  # None when no epoch finished
    path: Path | None = None

    @property
    def scenario(self) -> str:
        return self.config.scenario

    @property
    def backbone(self) -> str:
        return self.config.backbone

    @property
    def final(self) -> EpochStats | None:
        return self.history[-1] if self.history else None

    @property
    def weights_path(self) -> Path:
        return Path(self.path) / WEIGHTS_FILE

    def val_pictures(self, mistakes_first: bool = False) -> list[ValPrediction]:
        """The validation pictures with the saved weights' answers; empty when none were saved."""
        if not self.val_predictions:
            return []
        return self.val_predictions.pictures(self.dataset.root, mistakes_first)

    def summary(self) -> dict[str, str]:
        """The run as one table row: the command line's tables and Compare's show these columns."""
        best = f"{self.best_val_acc:.4f} (epoch {self.best_epoch})" if self.best_epoch else "-"
        return {
            "run": self.id, "status": self.status, "scenario": self.scenario, "backbone": self.backbone,
            "epochs": f"{len(self.history)}/{self.config.epochs}", "best val acc": best,
            "final val acc": f"{self.final.val_acc:.4f}" if self.final else "-", "time": f"{self.seconds:.1f} s",
            "s / epoch": f"{self.seconds / max(len(self.history), 1):.1f}",
            "trainable / total params": f"{self.trainable_params:,} / {self.total_params:,}",
            "weights": self.weights_source.describe(),
        }

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("path")
        data["format"] = RUN_FORMAT
        data["dataset"] = self.dataset.to_dict()
        data["weights_source"] = self.weights_source.to_dict()
        data["val_predictions"] = asdict(self.val_predictions) if self.val_predictions else {}
        return data

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> RunRecord:
        if data.get("format") != RUN_FORMAT:
            raise ValueError(f"unknown run format {data.get('format')!r}")
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["config"] = TrainConfig(**data["config"])
        fields["dataset"] = DatasetSummary.from_dict(data["dataset"])
        fields["history"] = [EpochStats(**epoch) for epoch in data["history"]]
        fields["weights_source"] = WeightsSource(**data["weights_source"])
        fields["val_predictions"] = ValPredictions(**data["val_predictions"]) if data.get("val_predictions") else None
        return cls(**fields, path=path)


@dataclass(frozen=True)
class DamagedRun:
    path: Path
    reason: str


@dataclass
class RunListing:
    runs: list[RunRecord]
    damaged: list[DamagedRun]


def _new_run_id(config: TrainConfig, now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{config.scenario}-{config.backbone}-{secrets.token_hex(2)}"


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def save_run(result: TrainResult, scan: DatasetScan, runs_dir: Path | None = None) -> RunRecord:
    """Write a finished or cancelled run. The folder appears complete, under its final name, or not at all."""
    runs_dir = Path(runs_dir or default_runs_dir())
    now = datetime.now(UTC)
    evaluation = result.best_eval
    record = RunRecord(
        id=_new_run_id(result.config, now),
        created=now.isoformat(timespec="seconds"),
        status=result.status,
        config=result.config,
        class_names=result.class_names,
        dataset=DatasetSummary.from_scan(scan),
        history=result.history,
        best_epoch=result.best_epoch,
        best_val_acc=result.best_val_acc,
        trainable_params=result.built.trainable_params,
        total_params=result.built.total_params,
        weights_source=result.built.weights_source,
        device=result.device,
        seconds=result.seconds,
        val_predictions=ValPredictions(
            files=[str(path.relative_to(scan.root)) for path, _ in scan.samples["val"]],
            labels=evaluation.labels,
            predictions=evaluation.predictions,
        ) if evaluation else None,
    )
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{record.id}.", dir=runs_dir))
    except OSError as exc:
        raise RunError(f"Cannot write runs into {runs_dir} ({exc}). Choose another runs folder ({RUNS_DIR_ENV}).",
                       RUNS_DIR) from exc
    try:
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        weights_tmp = staging / WEIGHTS_FILE
        torch.save(state, weights_tmp)
        with open(weights_tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        _write_file(staging / METADATA_FILE, json.dumps(record.to_dict(), indent=2).encode())
        final = runs_dir / record.id
        staging.rename(final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunError(f"Could not save the run into {runs_dir} ({exc}); nothing was left half-written.",
                       RUNS_DIR) from exc
    record.path = final
    return record


def read_run(folder: Path) -> RunRecord:
    """Read one run folder, or raise RunError saying what is wrong with it."""
    folder = Path(folder)
    try:
        data = json.loads((folder / METADATA_FILE).read_text())
        data["id"] = folder.name  # the folder name is the id, also for a copied or renamed run
        record = RunRecord.from_dict(data, path=folder)
    except FileNotFoundError:
        raise RunError(f"{folder} has no {METADATA_FILE}; it is not a saved run.") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RunError(f"{folder / METADATA_FILE} is damaged ({type(exc).__name__}: {exc}).") from exc
    if not (folder / WEIGHTS_FILE).is_file():
        raise RunError(f"{folder} has no {WEIGHTS_FILE}; its weights are lost.")
    return record


def list_runs(runs_dir: Path | None = None) -> RunListing:
    """Every readable run, newest first; damaged folders are reported, never fatal."""
    runs_dir = Path(runs_dir or default_runs_dir())
    listing = RunListing([], [])
    if not runs_dir.is_dir():
        return listing
    for folder in sorted(runs_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            listing.runs.append(read_run(folder))
        except RunError as exc:
            listing.damaged.append(DamagedRun(folder, str(exc)))
    listing.runs.sort(key=lambda run: (run.created, run.id), reverse=True)
    return listing


def latest_run(runs: list[RunRecord], scenario: str | None = None) -> RunRecord | None:
    """The newest of `runs` (newest first, as list_runs gives them), of `scenario` if one is given."""
    return next((run for run in runs if scenario is None or run.scenario == scenario), None)


def default_runs(runs: list[RunRecord], scenarios: tuple[str, ...] = TUTORIAL_SCENARIOS) -> list[RunRecord]:
    """The runs shown when the user has chosen none: the latest of each scenario, else the two newest."""
    chosen = [run for scenario in scenarios if (run := latest_run(runs, scenario))]
    return chosen or runs[:2]


def find_run(reference: str, runs_dir: Path | None = None) -> RunRecord:
    """A run by folder path, by id, by unique id prefix, or "latest" (optionally "latest:SCENARIO")."""
    path = Path(reference)
    if path.is_dir() and (path / METADATA_FILE).exists():
        return read_run(path)
    runs = list_runs(runs_dir).runs
    if reference.startswith("latest"):
        latest = latest_run(runs, reference.partition(":")[2] or None)
        matches = [latest] if latest else []
    else:
        matches = [run for run in runs if run.id == reference] or [run for run in runs if run.id.startswith(reference)]
    if len(matches) == 1:
        return matches[0]
    where = Path(runs_dir or default_runs_dir())
    if not matches:
        raise RunError(f"No run {reference!r} in {where}.")
    raise RunError(f"{reference!r} matches {len(matches)} runs in {where}; give more of the id.")


def load_model(run: RunRecord, device: torch.device | str = "cpu") -> nn.Module:
    """The run's trained network in eval mode on `device` (weights read with weights_only=True)."""
    model = build_architecture(run.backbone, len(run.class_names))
    try:
        state = torch.load(run.weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # damaged file, wrong keys, unsafe pickle
        raise RunError(f"The weights of run {run.id} cannot be loaded ({exc}).") from exc
    return model.to(device).eval()
