"""Everything the pages keep between reruns: the job, loaded models, data-set scans."""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import streamlit as st
import torch

from core.explain import grad_cam
from core.export import export_run
from core.data import DatasetScan, default_data_root, scan_dataset, tutorial_data_dir
from core.jobs import TrainingJobs
from core.predict import Predictor, load_predictor
from core.runs import RunListing, RunRecord, default_runs_dir, list_runs, read_run
from core.train import pick_device

UPLOADS_FOLDER = "uploads"  # under the data root: data sets that came as zip files
MAX_PHOTO_MB = 20


@st.cache_resource
def training_jobs() -> TrainingJobs:
    """One job manager for the whole server: every tab and page sees the same job."""
    return TrainingJobs()


@st.cache_resource(max_entries=8)
def cached_predictor(run_id: str, run_path: str, device: str) -> Predictor:
    """A run's model stays on its device across reruns and pages; keyed by run and device."""
    return load_predictor(read_run(Path(run_path)), torch.device(device))


def predictor_for(run: RunRecord) -> Predictor:
    return cached_predictor(run.id, str(run.path), str(inference_device()))


def inference_device() -> torch.device:
    return pick_device("auto")


def _folder_signature(folder: Path) -> tuple:
    """Changes when pictures are added or removed, so a cached scan is redone."""
    try:
        return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in folder.glob("*/*")))
    except OSError:
        return ()


@st.cache_data(max_entries=16, show_spinner="Checking the data set...")
def _scan(folder: str, signature: tuple) -> DatasetScan:
    return scan_dataset(Path(folder))


def scan(folder: Path) -> DatasetScan:
    return _scan(str(folder), _folder_signature(Path(folder)))


def data_root() -> Path:
    return default_data_root()


def runs_dir() -> Path:
    return default_runs_dir()


def runs() -> RunListing:
    return list_runs(runs_dir())


def known_datasets() -> dict[str, Path]:
    """Label -> folder for the tutorial's set and every uploaded set that exists on disk."""
    found = {"Tutorial: ants and bees (hymenoptera_data)": tutorial_data_dir(data_root())}
    uploads = data_root() / UPLOADS_FOLDER
    if uploads.is_dir():
        for folder in sorted(p for p in uploads.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found[f"Uploaded: {folder.name}"] = folder
    return found


def run_label(run: RunRecord) -> str:
    when = run.created.replace("T", " ")[:16]
    flag = " (cancelled)" if run.status == "cancelled" else ""
    return f"{run.scenario} · {run.backbone} · {when} · best {run.best_val_acc:.3f}{flag}"


def default_runs(listing: RunListing, scenarios=("finetune", "frozen")) -> list[RunRecord]:
    """The latest run of each scenario, as the pages show by default."""
    chosen = []
    for scenario in scenarios:
        latest = next((r for r in listing.runs if r.scenario == scenario), None)
        if latest:
            chosen.append(latest)
    return chosen or listing.runs[:2]


_explain_lock = threading.Lock()  # Captum hooks into the shared cached model: one explanation at a time


@st.cache_data(max_entries=256, show_spinner=False)
def heat_map(run_id: str, run_path: str, picture: bytes | str):
    """The Grad-CAM overlay (a PIL image) of the run's predicted class for a picture (bytes or a path)."""
    run = read_run(Path(run_path))
    predictor = cached_predictor(run_id, run_path, str(inference_device()))
    with _explain_lock:
        return grad_cam(predictor.model, run.backbone, picture if isinstance(picture, bytes) else Path(picture),
                        device=predictor.device).overlay()


@st.cache_data(max_entries=8, show_spinner=False)
def bundle(run_id: str, run_path: str, fmt: str) -> bytes:
    """A run exported as a zip bundle (checked against PyTorch as it is made)."""
    with tempfile.TemporaryDirectory() as work:
        return export_run(read_run(Path(run_path)), fmt, Path(work)).path.read_bytes()
