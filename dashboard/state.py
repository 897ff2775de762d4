"""What the pages keep between reruns, all through Streamlit's caches: the job manager, loaded models,
data-set scans, heat maps and export bundles. Each is keyed on what identifies it: a run by its folder,
a data set by its folder and what the folder holds."""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import streamlit as st
import torch
from PIL import Image

from core.data import DatasetScan, scan_dataset
from core.device import pick_device
from core.explain import grad_cam
from core.export import export_run
from core.images import open_image
from core.jobs import TrainingJobs
from core.predict import Predictor, load_predictor
from core.runs import RunRecord, read_run


@st.cache_resource
def training_jobs() -> TrainingJobs:
    """One job manager for the whole server: every tab and page sees the same job."""
    return TrainingJobs()


@st.cache_resource(max_entries=8)
def _predictor(run_folder: str, device: str) -> Predictor:
    return load_predictor(read_run(Path(run_folder)), torch.device(device))


def predictor(run: RunRecord) -> Predictor:
    """The run's model, loaded once and kept on this machine's best device across reruns and pages."""
    return _predictor(str(run.path), str(pick_device("auto")))


@st.cache_data(max_entries=16, show_spinner="Checking the data set...")
def _scan(folder: str, contents: tuple) -> DatasetScan:
    return scan_dataset(Path(folder))


def scan(folder: Path) -> DatasetScan:
    """The data set's scan, done again when pictures are added or removed."""
    try:
        contents = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in Path(folder).glob("*/*")))
    except OSError:
        contents = ()
    return _scan(str(folder), contents)


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail(path: str, size: int = 240) -> Image.Image:
    """A picture file shrunk to fit size x size, for galleries."""
    picture = open_image(Path(path))
    picture.thumbnail((size, size))
    return picture


_explain_lock = threading.Lock()  # Captum hooks into the shared cached model: one explanation at a time


@st.cache_data(max_entries=256, show_spinner=False)
def heat_map(run_folder: str, picture: bytes | str) -> Image.Image:
    """The Grad-CAM overlay of the run's predicted class for a picture (bytes, or a path as a string)."""
    run = read_run(Path(run_folder))
    loaded = predictor(run)
    with _explain_lock:
        return grad_cam(loaded.model, run.backbone, picture if isinstance(picture, bytes) else Path(picture),
                        device=loaded.device).overlay()


@st.cache_data(max_entries=8, show_spinner=False)
def bundle(run_folder: str, fmt: str) -> bytes:
    """A run exported as a zip bundle (checked against PyTorch as it is made)."""
    with tempfile.TemporaryDirectory() as work:
        return export_run(read_run(Path(run_folder)), fmt, Path(work)).path.read_bytes()
