"""Transfer learning studio: the tutorial's two scenarios as a library (data, models, training, runs, experiments,
prediction).

Importable without Streamlit; the command line is `python -m core`.
"""
from core.data import DatasetScan, ensure_tutorial_data, known_datasets, load_dataset, scan_dataset, tutorial_data_dir
from core.device import pick_device
from core.errors import (
    ArchiveError,
    ConfigError,
    DatasetError,
    ImageError,
    JobRefused,
    RunError,
    StudioError,
    TrainingCancelled,
    WeightsError,
)
from core.experiment import ExperimentPlan, ExperimentRunner, results, subset
from core.images import open_image
from core.models import BACKBONES, SCENARIOS, TUTORIAL_SCENARIOS, BuiltModel, WeightsSource, build_model
from core.predict import Prediction, Predictor, load_predictor
from core.presets import EVAL_TRANSFORM, TRAIN_TRANSFORM, EvalPreset, TrainPreset
from core.runs import RunListing, RunRecord, default_runs, find_run, latest_run, list_runs, load_model, save_run
from core.train import BatchProgress, EpochStats, TrainConfig, Trainer, TrainResult, train

__all__ = [
    "ArchiveError", "BACKBONES", "BatchProgress", "BuiltModel", "ConfigError", "DatasetError", "DatasetScan",
    "EVAL_TRANSFORM", "EpochStats", "EvalPreset", "ExperimentPlan", "ExperimentRunner", "ImageError", "JobRefused",
    "Prediction", "Predictor", "RunError", "RunListing", "RunRecord", "SCENARIOS", "StudioError", "TRAIN_TRANSFORM",
    "TUTORIAL_SCENARIOS", "TrainConfig", "TrainPreset", "Trainer", "TrainResult", "TrainingCancelled", "WeightsError",
    "WeightsSource", "build_model", "default_runs", "ensure_tutorial_data", "find_run", "known_datasets",
    "latest_run", "list_runs", "load_dataset", "load_model", "load_predictor", "open_image", "pick_device", "results",
    "save_run", "scan_dataset", "subset", "train", "tutorial_data_dir",
]
