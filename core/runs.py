"""Runs on disk: one folder per run with run.json and model.pt, written atomically."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from core import staging
from core.config import TrainConfig
from core.data import DatasetScan, SkippedFile
from core.errors import RUNS_DIR, RunError, StudioError
from core.models import (
    TUTORIAL_SCENARIOS,
    WeightsSource,
    build_architecture,
    copy_state,
    get_scenario,
    read_state_dict,
)
from core.presets import TUTORIAL_PREPROCESSING, Preprocessing
from core.results import Compilation, EpochStats, EvalResult, PhaseRecord, Placement, TrainResult
from core.stats import Estimate, wilson

RUNS_DIR_ENV = "STUDIO_RUNS_DIR"
RUN_FORMAT = 1
METADATA_FILE = "run.json"
WEIGHTS_FILE = "model.pt"
STATUSES = ("completed", "cancelled", "diverged")
# Staging folders of save_run: ".RUN-ID.xxxxxxxx", where a run ID starts with its date and time.
STAGING = staging.staging_pattern(r"(?P<id>\d{8}-\d{6}-[^/]+)")
WRITE_CHECK = "write-check"
EXPERIMENTS_FOLDER = "experiments"  # in the runs folder, not a run: what core.experiment keeps of each experiment
DATASETS_FOLDER = "datasets"  # in the runs folder, not a run: per data set, its exclusion list and health check


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


@dataclass
class DatasetSummary:
    """What a run was trained on: the data folder, pictures per split and class, and the files skipped."""

    path: str
    counts: dict[str, dict[str, int]]  # {"train": {"ants": 123, ...}, "val": {...}}
    skipped: list[SkippedFile] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # pictures left out by the data set's exclusion list

    @property
    def root(self) -> Path:
        return Path(self.path)

    def total(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    @classmethod
    def from_scan(cls, scan: DatasetScan) -> DatasetSummary:
        return cls(str(Path(scan.root).resolve()), scan.counts(), list(scan.skipped),
                   sorted(scan.relative(path) for path in scan.excluded))

    def to_dict(self) -> dict:
        return {"path": self.path, "counts": self.counts,
                "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
                "excluded": self.excluded}

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSummary:
        skipped = [SkippedFile(Path(s["path"]), s["reason"]) for s in data.get("skipped", [])]
        excluded = data.get("excluded", [])
        if not isinstance(excluded, list) or not all(isinstance(file, str) for file in excluded):
            raise TypeError("dataset.excluded must be a list of names")
        return cls(data["path"], data["counts"], skipped, excluded)


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
class Predictions:
    """The saved weights' answers on every picture of one evaluation split (val, or test), in the data set's order."""

    files: list[str]  # relative to the data set's folder
    labels: list[int]
    predictions: list[int]

    @property
    def mistakes(self) -> int:
        return sum(label != predicted for label, predicted in zip(self.labels, self.predictions))

    @property
    def correct(self) -> list[bool]:
        return [label == predicted for label, predicted in zip(self.labels, self.predictions)]

    @property
    def accuracy(self) -> Estimate:
        """The share right, with the Wilson interval that the number of pictures allows."""
        return wilson(len(self.labels) - self.mistakes, len(self.labels))

    def check(self, classes: int, name: str) -> None:
        if not len(self.files) == len(self.labels) == len(self.predictions):
            raise ValueError(f"{name}' lists differ in length")
        if not all(isinstance(file, str) for file in self.files):
            raise TypeError(f"{name}.files must be names")
        if not all(isinstance(i, int) and 0 <= i < classes for i in self.labels + self.predictions):
            raise ValueError(f"{name} hold a class number out of range")

    @classmethod
    def of(cls, evaluation: EvalResult, scan: DatasetScan, split: str) -> Predictions:
        return cls([str(path.relative_to(scan.root)) for path, _ in scan.samples[split]], evaluation.labels,
                   evaluation.predictions)

    def confusion(self, num_classes: int) -> list[list[int]]:
        """counts[actual][predicted]."""
        counts = [[0] * num_classes for _ in range(num_classes)]
        for label, predicted in zip(self.labels, self.predictions):
            counts[label][predicted] += 1
        return counts

    def pictures(self, root: Path, mistakes_first: bool = False) -> list[ValPrediction]:
        """The pictures under `root`; an entry that would lead outside it (absolute, `..`, a link) is left out."""
        items = [ValPrediction(path, label, predicted)
                 for file, label, predicted in zip(self.files, self.labels, self.predictions)
                 if (path := picture_path(root, file))]
        return sorted(items, key=lambda item: item.correct) if mistakes_first else items


def picture_path(root: Path, file: str) -> Path | None:
    """The picture `file` (as a run names it) under `root`; None when the name would lead outside it (absolute,
    `..`, a link)."""
    root = Path(root).resolve()
    path = (root / file).resolve()
    return path if path.is_relative_to(root) and path != root else None


@dataclass(frozen=True)
class ExperimentCell:
    """Where a run sits in an experiment (core.experiment): its scenario and seed are the run's own."""

    experiment: str  # the experiment's name
    pictures_per_class: int | None  # the training pictures of each class it was given; None: all of them
    shared_features: bool = False  # a frozen backbone's features computed once for the whole experiment
    train_files: list[str] | None = None  # the training pictures it was given, relative to the data set's folder;
    # None when it was given all of them
    features_seconds: float | None = None  # how long the shared features took to compute; None in runs saved before

    def __post_init__(self) -> None:
        _expect(self.__dict__, "experiment", str)
        if self.pictures_per_class is not None and _expect(self.__dict__, "pictures_per_class", int) < 1:
            raise ValueError("pictures_per_class must be at least 1")
        if self.train_files is not None and not all(isinstance(f, str) for f in _expect(self.__dict__,
                                                                                         "train_files", list)):
            raise TypeError("train_files must be names")
        if self.features_seconds is not None:
            _finite(self.features_seconds, "features_seconds")
            if self.features_seconds < 0:
                raise ValueError("features_seconds must not be negative")


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
    val_predictions: Predictions | None = None  # None when no epoch finished
    test_predictions: Predictions | None = None  # of the kept weights on test/, when the data set has one
    experiment: ExperimentCell | None = None  # when the run is a cell of an experiment (core.experiment)
    weights_bytes: int | None = None  # the size of model.pt as saved; None in runs saved before it was recorded
    compilation: Compilation | None = None  # whether training ran compiled, and why; None in runs saved before
    placement: Placement | None = None  # where it trained (hosts, devices, processes); None in runs saved before
    phases: list[PhaseRecord] | None = None  # the recipe's phases as they ran; None in runs saved before recipes
    # what its pictures went through (the backbone's); the tutorial's in runs saved before backbones had their own
    preprocessing: Preprocessing = TUTORIAL_PREPROCESSING
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

    def phase_records(self) -> list[PhaseRecord]:
        """The recipe's phases as they ran; for a run saved before recipes had phases, the tutorial's one."""
        if self.phases is not None:
            return self.phases
        group = "all" if get_scenario(self.scenario).train_backbone else "head"
        return [PhaseRecord("train", "what the scenario trains", self.config.epochs, "sgd", "step",
                            {group: self.config.lr})]

    @property
    def trained(self) -> bool:
        """Whether at least one epoch finished: a run stopped before that has an untrained last layer."""
        return self.best_epoch is not None

    @property
    def weights_path(self) -> Path:
        return Path(self.path) / WEIGHTS_FILE

    def val_pictures(self, mistakes_first: bool = False) -> list[ValPrediction]:
        """The validation pictures with the saved weights' answers; empty when none were saved."""
        if not self.val_predictions:
            return []
        return self.val_predictions.pictures(self.dataset.root, mistakes_first)

    def best_val(self) -> Estimate | None:
        """Validation accuracy of the kept (best-epoch) weights, with the Wilson interval its number of pictures
        allows. Chosen on these same pictures, so optimistic."""
        if self.val_predictions:
            return self.val_predictions.accuracy
        return self._accuracy(self.best_val_acc) if self.trained else None

    def final_val(self) -> Estimate | None:
        """The last finished epoch's validation accuracy, with its Wilson interval."""
        return self._accuracy(self.final.val_acc) if self.final else None

    def test(self) -> Estimate | None:
        """Accuracy on test/ of the kept weights, with its Wilson interval: the number no choice looked at."""
        return self.test_predictions.accuracy if self.test_predictions else None

    def _accuracy(self, fraction: float) -> Estimate | None:
        pictures = self.dataset.total("val")
        return wilson(round(fraction * pictures), pictures) if pictures else None

    def summary(self, paths: bool = True) -> dict[str, str]:
        """The run as one table row: the command line's tables and Compare's show these columns. Accuracies come
        with their 95% Wilson interval in brackets. Without `paths` the weights file is named but its folder not
        shown (a shared server)."""
        best, final, test = self.best_val(), self.final_val(), self.test()
        return {
            "run": self.id, "status": self.status, "scenario": self.scenario, "backbone": self.backbone,
            "recipe": self.config.recipe,
            "epochs": f"{len(self.history)}/{self.config.epochs}",
            "best val acc": f"{accuracy_text(best)} (epoch {self.best_epoch})" if best else "-",
            "final val acc": accuracy_text(final) if final else "-",
            "test acc": accuracy_text(test) if test else "-",
            "time": f"{self.seconds:.1f} s", "s / epoch": f"{self.seconds / max(len(self.history), 1):.1f}",
            "trainable / total params": f"{self.trainable_params:,} / {self.total_params:,}",
            "compiled": self.compiled_text(),
            "trained on": self.placement.text() if self.placement else "-",
            "weights": self.weights_source.describe(paths),
        }

    def compiled_text(self) -> str:
        """Whether the training steps ran compiled, in a word: "yes", "no", "failed" (it trained eager) or "-"."""
        return self.compilation.word if self.compilation else "-"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("path")
        data["format"] = RUN_FORMAT
        data["dataset"] = self.dataset.to_dict()
        data["weights_source"] = self.weights_source.to_dict()
        data["val_predictions"] = asdict(self.val_predictions) if self.val_predictions else {}
        data["test_predictions"] = asdict(self.test_predictions) if self.test_predictions else None
        data["experiment"] = asdict(self.experiment) if self.experiment else None
        data["preprocessing"] = self.preprocessing.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> RunRecord:
        """The record in `data`, checked field by field; ValueError or TypeError says what is wrong."""
        if not isinstance(data, dict):
            raise TypeError("it does not hold a JSON object")
        if isinstance(data.get("format"), int) and data["format"] > RUN_FORMAT:
            raise NewerFormat(data["format"])
        if data.get("format") != RUN_FORMAT:
            raise ValueError(f"unknown run format {data.get('format')!r}")
        known = {f.name for f in fields(cls)} - {"path"}
        values = {k: v for k, v in data.items() if k in known}
        values["config"] = TrainConfig(**_expect(data, "config", dict))
        values["dataset"] = DatasetSummary.from_dict(_expect(data, "dataset", dict))
        values["history"] = [EpochStats(**epoch) for epoch in _expect(data, "history", list)]
        values["weights_source"] = WeightsSource(**_expect(data, "weights_source", dict))
        values["val_predictions"] = Predictions(**data["val_predictions"]) if data.get("val_predictions") else None
        values["test_predictions"] = Predictions(**data["test_predictions"]) if data.get("test_predictions") else None
        values["experiment"] = ExperimentCell(**data["experiment"]) if data.get("experiment") else None
        values["compilation"] = Compilation.from_dict(data["compilation"]) if data.get("compilation") else None
        values["placement"] = Placement.from_dict(data["placement"]) if data.get("placement") else None
        values["phases"] = ([PhaseRecord(**phase) for phase in _expect(data, "phases", list)]
                            if data.get("phases") is not None else None)
        values["preprocessing"] = Preprocessing.from_dict(data.get("preprocessing"))
        record = cls(**values, path=path)
        check_record(record)
        return record


def check_record(record: RunRecord) -> None:
    """Raise ValueError or TypeError when a field of `record` holds what no saved run holds."""
    _expect(record.__dict__, "id", str)
    _expect(record.__dict__, "created", str)
    _expect(record.__dict__, "device", str)
    if record.status not in STATUSES:
        raise ValueError(f"unknown status {record.status!r}")
    names = _expect(record.__dict__, "class_names", list)
    if len(names) < 2 or not all(isinstance(name, str) for name in names):
        raise ValueError("class_names must list at least two names")
    for name in ("trainable_params", "total_params"):
        _expect(record.__dict__, name, int)
    if record.best_epoch is not None and not 1 <= _expect(record.__dict__, "best_epoch", int) <= len(record.history):
        raise ValueError(f"best_epoch {record.best_epoch} is not one of the {len(record.history)} epochs")
    _finite(record.best_val_acc, "best_val_acc")
    _finite(record.seconds, "seconds")
    for epoch in record.history:
        for name in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"):
            _finite(getattr(epoch, name), f"history {name}")
        for rate in (epoch.rates or {}).values():
            _finite(rate, "history rates")
    if record.weights_bytes is not None:
        _expect(record.__dict__, "weights_bytes", int)
    for name in ("val_predictions", "test_predictions"):
        if predictions := getattr(record, name):
            predictions.check(len(names), name)


def accuracy_text(accuracy: Estimate) -> str:
    """An accuracy with its 95% interval, for tables: "0.961 [0.917, 0.982]"; a mean of one run has none."""
    if accuracy.n < 2 and accuracy.low == accuracy.high:
        return f"{accuracy.value:.3f} [one run: no interval]"
    return f"{accuracy.value:.3f} [{accuracy.low:.3f}, {accuracy.high:.3f}]"


class NewerFormat(ValueError):
    def __init__(self, found: int):
        super().__init__(f"it was saved by a newer version of the studio (run format {found}; this one reads "
                         f"format {RUN_FORMAT}). Update the studio to use it.")


def _expect(data: dict, name: str, kind: type):
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _finite(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")


@dataclass(frozen=True)
class DamagedRun:
    path: Path
    reason: str


@dataclass
class RunListing:
    runs: list[RunRecord]
    damaged: list[DamagedRun]
    recovered: list[Path] = field(default_factory=list)  # runs whose saving was cut off, now in place


def _new_run_id(config: TrainConfig, now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{config.scenario}-{config.backbone}-{secrets.token_hex(2)}"


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def dataset_name(data_dir: Path) -> str:
    """The data set's folder name as a part of a file name: letters, digits, '_', '.' and '-', at most 40."""
    return (re.sub(r"[^A-Za-z0-9_.-]", "-", Path(data_dir).resolve().name).strip("-.") or "data")[:40]


def dataset_dir(data_dir: Path, runs_dir: Path | None = None) -> Path:
    """The folder beside the runs that keeps what belongs to one data set (its exclusion list, its health check):
    named after the data set's folder, and told apart from others of that name by a hash of its full path."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:10]
    return Path(runs_dir or default_runs_dir()) / DATASETS_FOLDER / f"{dataset_name(data_dir)}-{digest}"


def check_runs_dir(runs_dir: Path | None = None, backbone: str | None = None) -> Path:
    """Raise RunError now, before any training, when a run could not be saved into `runs_dir`: it cannot be
    made, is not a folder, cannot be written, or (given the backbone) has too little room for the weights."""
    runs_dir = Path(runs_dir or default_runs_dir())
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with staging.staging_folder(runs_dir, WRITE_CHECK) as probe:
            _write_file(probe / "probe", b"ok")
        free = shutil.disk_usage(runs_dir).free
    except OSError as exc:
        raise RunError(f"Runs cannot be saved into {runs_dir} ({exc.strerror or exc}). Choose a folder that can be "
                       f"written to ({RUNS_DIR_ENV}); nothing was trained.", RUNS_DIR) from exc
    if backbone:
        needed = 2 * 4 * sum(p.numel() for p in build_architecture(backbone, 2).parameters())  # float32, twice
        if free < needed:
            raise RunError(f"Only {free / 2**20:.0f} MB are free in {runs_dir}; a {backbone} run needs about "
                           f"{needed / 2**20:.0f} MB. Free some space or choose another runs folder "
                           f"({RUNS_DIR_ENV}); nothing was trained.", RUNS_DIR)
    return runs_dir


def save_run(result: TrainResult, scan: DatasetScan, runs_dir: Path | None = None,
             experiment: ExperimentCell | None = None) -> RunRecord:
    """Write a finished or cancelled run (of an experiment's cell when `experiment` is given). The folder appears
    complete, under its final name, or not at all."""
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
        val_predictions=Predictions.of(evaluation, scan, "val") if evaluation else None,
        test_predictions=Predictions.of(result.test_eval, scan, "test") if result.test_eval else None,
        experiment=experiment,
        compilation=result.compilation,
        placement=result.placement,
        phases=result.phases,
        preprocessing=result.preprocessing,
    )
    final = runs_dir / record.id
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        recover_runs(runs_dir)
        with staging.staging_folder(runs_dir, record.id) as folder:
            torch.save(copy_state(result.model, "cpu"), folder / WEIGHTS_FILE)
            with open(folder / WEIGHTS_FILE, "rb+") as stream:
                os.fsync(stream.fileno())
            record.weights_bytes = (folder / WEIGHTS_FILE).stat().st_size
            metadata = json.dumps(record.to_dict(), indent=2, allow_nan=False)
            _write_file(folder / METADATA_FILE, metadata.encode())
            folder.rename(final)
        staging.sync_folder(runs_dir)
    except (OSError, RuntimeError, ValueError) as exc:  # torch.save raises RuntimeError when the disk is full
        reason = _save_failure(exc, runs_dir, 4 * record.total_params)
        raise RunError(f"Could not save the run into {runs_dir} ({reason}); nothing was left half-written. Free "
                       f"some space or choose another runs folder ({RUNS_DIR_ENV}).", RUNS_DIR) from exc
    record.path = final
    return record


def _save_failure(exc: Exception, runs_dir: Path, weights_bytes: int) -> str:
    """Why a save failed, in words: torch's own message for a full disk is about stream positions."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    try:
        free = shutil.disk_usage(runs_dir).free
    except OSError:
        free = None
    if free is not None and free < weights_bytes * 1.1:
        return f"the disk is full: {free / 2**20:.0f} MB free, the weights need about {weights_bytes / 2**20:.0f} MB"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def read_run(folder: Path) -> RunRecord:
    """Read one run folder, or raise RunError saying what is wrong with it."""
    folder = Path(folder)
    try:
        data = json.loads((folder / METADATA_FILE).read_text(), parse_constant=_refuse_constant)
        if isinstance(data, dict):
            data["id"] = folder.name  # the folder name is the id, also for a copied or renamed run
        record = RunRecord.from_dict(data, path=folder)
    except FileNotFoundError:
        raise RunError(f"{folder} has no {METADATA_FILE}; it is not a saved run.") from None
    except NewerFormat as exc:
        raise RunError(f"{folder.name} cannot be read: {exc}") from exc
    except (OSError, ValueError, TypeError, KeyError, StudioError) as exc:
        raise RunError(f"{folder / METADATA_FILE} is damaged ({type(exc).__name__}: {exc}).") from exc
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise RunError(f"{folder} has no {WEIGHTS_FILE}; its weights are lost.")
    size = weights.stat().st_size
    if record.weights_bytes is not None and size != record.weights_bytes:
        raise RunError(f"{weights} is damaged: it holds {size:,} bytes where {record.weights_bytes:,} were saved.")
    return record


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def recover_runs(runs_dir: Path) -> list[Path]:
    """Finish what a save cut off (by kill -9, a power cut) left in `runs_dir`: a staging folder that holds a
    complete run is moved into place, anything else of a dead writer is removed. Returns the recovered runs."""
    for leftover, _lock in staging.abandoned(runs_dir, staging.staging_pattern(WRITE_CHECK)):
        staging.remove(leftover)
    recovered = []
    for leftover, _lock in staging.abandoned(runs_dir, STAGING):
        final = runs_dir / STAGING.fullmatch(leftover.name)["id"]
        try:
            read_run(leftover)
            if final.exists():
                raise RunError("already in place")
            leftover.rename(final)
        except (RunError, OSError):
            staging.remove(leftover)
            continue
        staging.sync_folder(runs_dir)
        recovered.append(final)
    return recovered


def list_runs(runs_dir: Path | None = None) -> RunListing:
    """Every readable run, newest first; damaged folders are reported, never fatal. Runs whose saving was
    cut off are recovered first."""
    runs_dir = Path(runs_dir or default_runs_dir())
    listing = RunListing([], [])
    if not runs_dir.is_dir():
        return listing
    listing.recovered = recover_runs(runs_dir)
    for folder in sorted(runs_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in (EXPERIMENTS_FOLDER, DATASETS_FOLDER):
            continue
        try:
            listing.runs.append(read_run(folder))
        except RunError as exc:
            listing.damaged.append(DamagedRun(folder, str(exc)))
    listing.runs.sort(key=lambda run: (run.created, run.id), reverse=True)
    return listing


def latest_run(runs: list[RunRecord], scenario: str | None = None) -> RunRecord | None:
    """The newest trained run of `runs` (newest first, as list_runs gives them), of `scenario` if one is given.
    A run stopped before its first epoch finished is never the latest: it has nothing to predict with."""
    return next((run for run in runs if run.trained and (scenario is None or run.scenario == scenario)), None)


def default_runs(runs: list[RunRecord], scenarios: tuple[str, ...] = TUTORIAL_SCENARIOS) -> list[RunRecord]:
    """The runs shown when the user has chosen none, all of one data set (that of the newest trained run): the
    latest trained run of each scenario, else the two newest trained runs. Experiment cells trained on a part of
    the training pictures are passed over while there are runs trained on all of them."""
    trained = [run for run in runs if run.trained]
    whole = [run for run in trained if not (run.experiment and run.experiment.pictures_per_class)]
    trained = whole or trained
    same_data = [run for run in trained if run.dataset.root == trained[0].dataset.root]
    chosen = [run for scenario in scenarios if (run := latest_run(same_data, scenario))]
    return chosen or same_data[:2]


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
    if not run.trained:
        raise RunError(f"Run {run.id} was {run.status} before its first epoch finished: its new last layer was never "
                       "trained, so it cannot classify anything. Choose another run, or train again.")
    model = build_architecture(run.backbone, len(run.class_names))
    try:
        state, _ = read_state_dict(run.weights_path)
        model.load_state_dict(state)
    except (StudioError, RuntimeError) as exc:  # a damaged or unsafe file, or keys of another network
        raise RunError(f"The weights of run {run.id} cannot be loaded: {str(exc).splitlines()[0]}") from exc
    if not all(torch.isfinite(value).all() for value in model.state_dict().values() if value.is_floating_point()):
        raise RunError(f"The weights of run {run.id} hold NaN or infinite numbers: training diverged. Train again "
                       "with a smaller learning rate.")
    return model.to(device).eval()
