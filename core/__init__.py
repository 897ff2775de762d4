"""Transfer learning studio: the tutorial's two scenarios as a library (data, models, training, runs, prediction).

Importable without Streamlit; the command line is `python -m core`.
"""
from core.data import (EVAL_TRANSFORM, TRAIN_TRANSFORM, DatasetScan, ensure_tutorial_data, load_dataset,
                       scan_dataset, tutorial_data_dir)
from core.errors import (ArchiveError, DatasetError, ImageError, RunError, StudioError, TrainingCancelled,
                         WeightsError)
from core.images import open_image
from core.models import BACKBONES, SCENARIOS, BuiltModel, WeightsSource, build_model
from core.predict import Prediction, Predictor, load_predictor
from core.runs import RunListing, RunRecord, find_run, list_runs, load_model, save_run
from core.train import BatchProgress, EpochStats, TrainConfig, TrainResult, pick_device, train

__all__ = [
    "ArchiveError", "BACKBONES", "BatchProgress", "BuiltModel", "DatasetError", "DatasetScan", "EVAL_TRANSFORM",
    "EpochStats", "ImageError", "Prediction", "Predictor", "RunError", "RunListing", "RunRecord", "SCENARIOS",
    "StudioError", "TRAIN_TRANSFORM", "TrainConfig", "TrainResult", "TrainingCancelled", "WeightsError",
    "WeightsSource", "build_model", "ensure_tutorial_data", "find_run", "list_runs", "load_dataset", "load_model",
    "load_predictor", "open_image", "pick_device", "save_run", "scan_dataset", "train", "tutorial_data_dir",
]
