"""What the pages keep between reruns, all through Streamlit's caches: the settings, the job manager, loaded
models, data-set scans, heat maps, feature maps and export bundles. (A run's features and a data set's health
check are kept on disk by core, beside the runs.) Each is keyed on what identifies it: a run by its folder,
a data set by its folder and what the folder holds. And what each browser session keeps: its visitor token,
which names its uploads in shared mode and owns the jobs it starts."""
from __future__ import annotations

import contextlib
import secrets
import tempfile
import threading
from pathlib import Path

import cachetools
import numpy as np
import streamlit as st
import torch
from PIL import Image

from core import analysis
from core.data import (
    DatasetScan,
    known_datasets,
    scan_dataset,
    tutorial_data_dir,
    uploads_dir,
)
from core.device import pick_device
from core.explain import grad_cam
from core.export import export_run
from core.images import open_image
from core.jobs import TrainingJobs
from core.predict import Predictor, load_predictor
from core.runs import RunRecord, dataset_dir
from dashboard.settings import Settings, read_settings

SESSIONS_FOLDER = ".sessions"  # under the uploads folder, in shared mode: one folder per browser session


@st.cache_resource
def settings() -> Settings:
    """The dashboard's settings (dashboard/settings.py), read once when the server starts."""
    found = read_settings()
    if found.shared:
        st.set_option("client.showErrorDetails", "type")  # a traceback would show server paths
    return found


@st.cache_resource
def training_jobs() -> TrainingJobs:
    """One job manager for the whole server, holding every job to the settings' limits: every tab and page
    sees the same job."""
    return TrainingJobs(settings().limits)


@st.cache_resource
def weights_problems() -> dict[str, str]:
    """Backbone name -> why its pretrained weights could be neither found nor downloaded, when this server last
    tried (Home says so). Emptied for a backbone once its weights are found."""
    return {}


def visitor() -> str:
    """This browser session's secret token (a reload starts a new session, with a new token)."""
    return st.session_state.setdefault("visitor", secrets.token_hex(16))


def owner() -> str | None:
    """Who may cancel the jobs this session starts: in shared mode this session only, otherwise anyone."""
    return visitor() if settings().shared else None


def my_uploads() -> Path:
    """Where this session's zips are unpacked: its own folder in shared mode, the uploads folder otherwise."""
    return uploads_dir() / SESSIONS_FOLDER / visitor() if settings().shared else uploads_dir()


def datasets() -> dict[str, Path]:
    """Label -> folder of the data sets this session may train on: the tutorial's and the uploaded ones (in
    shared mode, this session's uploads only)."""
    found = known_datasets()
    if not settings().shared:
        return found
    mine = my_uploads()
    uploaded = sorted(p for p in mine.iterdir() if p.is_dir() and not p.name.startswith(".")) if mine.is_dir() else []
    return {label: folder for label, folder in found.items() if folder == tutorial_data_dir()} | {
        f"Uploaded: {folder.name}": folder for folder in uploaded}


def visible(runs: list[RunRecord]) -> list[RunRecord]:
    """The runs this session may see: in shared mode those trained on the data sets it may train on."""
    if not settings().shared:
        return runs
    allowed = {folder.resolve() for folder in datasets().values()}
    return [run for run in runs if run.dataset.root.resolve() in allowed]


def model_bytes(loaded: Predictor) -> int:
    """What a loaded model's weights and buffers take in memory."""
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


@st.cache_resource
def loaded_models() -> tuple[cachetools.LRUCache, threading.Lock]:
    """The models the pages keep loaded, by run folder and device, the least recently used let go first once they
    take more than the settings' model memory (STUDIO_MODEL_MEMORY_MB): large backbones chosen one after another
    cannot exhaust the server's memory."""
    return cachetools.LRUCache(settings().model_memory_bytes, getsizeof=model_bytes), threading.Lock()


def device() -> torch.device:
    """Where the dashboard's own work runs (prediction, Grad-CAM, features, the health check): this machine's best
    device, as core.device.pick_device picks it. A training job's device is its Trainer's."""
    return pick_device("auto")


def predictor(run: RunRecord) -> Predictor:
    """The run's model, loaded once and kept on this machine's best device across reruns and pages (loaded_models)."""
    models, lock = loaded_models()
    key = (str(run.path), str(device()))
    with lock:
        found = models.get(key)
    if found is None:
        found = load_predictor(run, device())
        with lock, contextlib.suppress(ValueError):  # larger than the whole model memory: used, not kept
            models[key] = found
    return found


@st.cache_data(max_entries=16, show_spinner="Checking the data set...")
def _scan(folder: str, contents: tuple) -> DatasetScan:
    return scan_dataset(Path(folder), dataset_dir(Path(folder)))  # kept beside the runs: see core.data


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


def heat_map(run: RunRecord, picture: bytes | str) -> Image.Image:
    """The Grad-CAM overlay of the run's predicted class for a picture (bytes, or a path as a string)."""
    return _heat_map(run, str(run.path), picture)


@st.cache_data(max_entries=256, show_spinner=False)
def _heat_map(_run: RunRecord, run_folder: str, picture: bytes | str) -> Image.Image:
    loaded = predictor(_run)
    with _explain_lock:
        return grad_cam(loaded.model, picture if isinstance(picture, bytes) else Path(picture), device=loaded.device,
                        preprocessing=_run.preprocessing).overlay()


@st.cache_data(max_entries=64, show_spinner=False)
def feature_map(features: np.ndarray, method: str) -> np.ndarray:
    """The features in two dimensions (core.analysis.feature_map), computed once per features and method."""
    return analysis.feature_map(features, method)


def bundle(run: RunRecord, fmt: str) -> bytes:
    """A run exported as a zip bundle (checked against PyTorch as it is made)."""
    return _bundle(run, str(run.path), fmt)


@st.cache_data(max_entries=8, show_spinner=False)
def _bundle(_run: RunRecord, run_folder: str, fmt: str) -> bytes:
    with tempfile.TemporaryDirectory() as work:
        return export_run(_run, fmt, Path(work), paths=not settings().shared).path.read_bytes()
