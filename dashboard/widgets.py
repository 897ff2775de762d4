"""Widgets and labels that more than one page uses."""
from __future__ import annotations

import streamlit as st
from PIL import Image

from core import errors
from core.errors import StudioError
from core.images import open_image
from core.presets import EVAL_TRANSFORM
from core.runs import RunRecord, default_runs, list_runs
from dashboard import state

MAX_PHOTO_MB = 20
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]

# What changes each setting for someone using the dashboard, added to the library's own error messages.
HINTS = {
    errors.DATA_ROOT: "The app reads STUDIO_DATA_ROOT when it starts; a data set of your own can be brought on "
                      "the Your own data page.",
    errors.DATA: "The Your own data page shows what a data folder must hold.",
    errors.WEIGHTS: "The app reads STUDIO_WEIGHTS when it starts; the scratch scenario needs no pretrained weights.",
    errors.RUNS_DIR: "The app reads STUDIO_RUNS_DIR when it starts: point it at a folder the app can write to.",
}


def error_message(message: str, setting: str | None) -> str:
    """A library error in the dashboard's terms: what went wrong, then what to do here."""
    hint = HINTS.get(setting)
    return f"{message} {hint}" if hint else message


def show_error(exc: StudioError | ValueError) -> None:
    st.error(error_message(str(exc), getattr(exc, "setting", None)))


def run_label(run: RunRecord, details: bool = True) -> str:
    """How a run is named on the pages; `details` adds its best accuracy and a cancelled mark."""
    label = f"{run.scenario} · {run.backbone} · {run.created.replace('T', ' ')[:16]}"
    if not details:
        return label
    return label + f" · best {run.best_val_acc:.3f}" + (" (cancelled)" if run.status == "cancelled" else "")


def pick_runs(label: str, none_yet: str) -> list[RunRecord]:
    """Saved runs to show, the latest finetune and frozen ones chosen by default; stops the page if none exist."""
    listing = list_runs()
    for damaged in listing.damaged:
        st.warning(f"Skipped a damaged run folder: {damaged.reason}")
    if not listing.runs:
        st.info(none_yet)
        st.stop()
    by_id = {run.id: run for run in listing.runs}
    chosen = st.multiselect(label, list(by_id), default=[r.id for r in default_runs(listing.runs)],
                            format_func=lambda run_id: run_label(by_id[run_id]), key="runs")
    return [by_id[run_id] for run_id in chosen]


def side_by_side(runs: list[RunRecord], most: int = 3):
    """(column, run) pairs: the runs side by side, at most `most` columns, further runs below the first ones."""
    return zip(st.columns(min(len(runs), most)) * len(runs), runs)


def download_bundles(run: RunRecord, key: str) -> None:
    """ONNX and TorchScript download buttons; the bundle is made when the button is pressed."""
    for column, (fmt, title) in zip(st.columns(2), (("onnx", "ONNX"), ("torchscript", "TorchScript"))):
        column.download_button(
            f"{title} bundle", data=lambda fmt=fmt: state.bundle(str(run.path), fmt),
            file_name=f"{run.id}-{fmt}.zip", mime="application/zip", key=f"{key}-{fmt}-{run.id}",
            help="The model, its classes and preprocessing, and a model card, in one zip.", on_click="ignore")


def photo_input() -> tuple[str, bytes, Image.Image]:
    """An uploaded or camera photo: its name, its bytes and the picture, decoded as the models will see it.
    Stops the page, with the reason, until there is one that can be read."""
    source = st.radio("Picture", ["Upload a file", "Take a photo"], horizontal=True, label_visibility="collapsed")
    if source == "Upload a file":
        upload = st.file_uploader("Photo (JPEG, PNG, WebP, GIF, BMP or TIFF)", type=PHOTO_TYPES)
    else:
        upload = st.camera_input("Photo")
    if upload is None:
        st.caption("Upload a photo or take one to see what each model predicts.")
        st.stop()
    data = upload.getvalue()
    if len(data) > MAX_PHOTO_MB * 2**20:
        st.error(f"{upload.name} is {len(data) / 2**20:.1f} MB; the limit is {MAX_PHOTO_MB} MB. Use a smaller photo.")
        st.stop()
    try:
        return upload.name, data, open_image(data, upload.name, at_least=EVAL_TRANSFORM.resize_size)
    except StudioError as exc:
        st.error(str(exc))
        st.stop()
