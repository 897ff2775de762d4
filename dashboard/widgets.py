"""Widgets and labels that more than one page uses."""
from __future__ import annotations

import re
from pathlib import Path

import streamlit as st
from PIL import Image

from core import errors
from core.analysis import cell_pictures, class_metrics
from core.data import default_data_root, uploads_dir
from core.errors import StudioError, WeightsError
from core.images import open_image
from core.jobs import JobLimits
from core.models import BACKBONES, SCENARIOS, ensure_weights, local_backbones
from core.presets import EVAL_TRANSFORM
from core.runs import RunRecord, accuracy_text, default_runs, default_runs_dir, list_runs
from dashboard import charts, state
from dashboard.charts import GALLERY_WIDTH

MAX_PHOTO_MB = 20  # a photo to classify: the uploader says it and refuses more, as does the check after a camera
MAX_ZIP_MB = 500  # a data set's zip, as the uploader says it; .streamlit/config.toml's maxUploadSize is the same
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]

# What changes each setting for someone using the dashboard, added to the library's own error messages.
HINTS = {
    errors.DATA_ROOT: "The app reads STUDIO_DATA_ROOT when it starts; a data set of your own can be brought on "
                      "the Your own data page.",
    errors.DATA: "The Your own data page shows what a data folder must hold.",
    errors.WEIGHTS: "The app reads STUDIO_WEIGHTS when it starts; the scratch scenario needs no pretrained weights.",
    errors.RUNS_DIR: "The app reads STUDIO_RUNS_DIR when it starts: point it at a folder the app can write to.",
}


# An absolute path, not inside a word or a URL, without the full stop that may end its sentence.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s`'\"(),;]*[^\s`'\"(),;.:]")
_PATH_ENDS = r"(?=[/\s`'\"(),;:]|\.(?!\w)|$)"
HIDDEN_PATH = "[server path]"


def private(text: str) -> str:
    """`text` as a visitor may see it: in shared mode with no server path in it (a data set's folder becomes
    its name, the settings' folders say what they are, any other path becomes [server path]); else as it is."""
    if not state.settings().shared:
        return text
    names = {default_data_root(): "the data folder", uploads_dir(): "the uploads folder",
             state.my_uploads(): "your uploads", default_runs_dir(): "the runs folder"}
    names |= {folder: folder.name for folder in state.datasets().values()}
    forms = {form: name for folder, name in names.items()
             for form in {str(folder), str(folder.absolute()), str(folder.resolve())} if "/" in form}
    for form in sorted(forms, key=len, reverse=True):
        text = re.sub(rf"(?<![\w./-]){re.escape(form)}{_PATH_ENDS}", lambda _, name=forms[form]: name, text)
    return _ABSOLUTE_PATH.sub(HIDDEN_PATH, text)


def shown_path(path: Path | str, before: str = " ") -> str:
    """`before` and the path in backticks, for a page to show; nothing in shared mode."""
    return "" if state.settings().shared else f"{before}`{path}`"


def limits_text(limits: JobLimits) -> str:
    """The limits a job is held to, as a sentence; empty when there are none."""
    parts = [f"at most {value:g} {unit}" for value, unit in ((limits.max_epochs, "epochs per scenario"),
             (limits.max_pictures, "pictures in train/, val/ and test/"), (limits.max_minutes, "minutes per job"))
             if value is not None]
    return f"Limits on this studio: {', '.join(parts)}." if parts else ""


def _weights_missing(backbone: str) -> str | None:
    """Why `backbone`'s ImageNet weights cannot be had (got now, with a spinner, when they can), or None."""
    try:
        with st.spinner(f"Getting {BACKBONES[backbone].title}'s ImageNet weights..."):
            ensure_weights(backbone)
        state.weights_problems().pop(backbone, None)
        return None
    except WeightsError as exc:
        state.weights_problems()[backbone] = str(exc)
        return str(exc)


def _instead(backbones: list[str]) -> str:
    others = [BACKBONES[name].title for name in local_backbones() if name not in backbones]
    return f"choose {' or '.join(others)}, whose weights are here, or " if others else ""


def runnable_scenarios(backbone: str, scenarios: list[str]) -> list[str]:
    """The scenarios that can train now: those needing pretrained weights only if the backbone's weights are here
    or can be downloaded (tried now, with a spinner). Says on the page what cannot run, and why."""
    pretrained = [name for name in scenarios if SCENARIOS[name].pretrained]
    if not pretrained or _weights_missing(backbone) is None:
        return scenarios
    title = BACKBONES[backbone].title
    can_run = [name for name in scenarios if name not in pretrained]
    st.error(private(f"{', '.join(SCENARIOS[name].title for name in pretrained)} start from {title}'s ImageNet "
                     f"weights, which are not on this machine and cannot be downloaded (no internet?). To train "
                     f"them, {_instead([backbone])}restart the app with STUDIO_WEIGHTS set to a {backbone} weights "
                     "file."))
    if can_run:
        st.info(f"Started {', '.join(SCENARIOS[name].title for name in can_run)} only: it needs no pretrained weights.")
    else:
        st.info("Nothing was started. The From scratch scenario needs no pretrained weights.")
    return can_run


def runnable_backbones(backbones: list[str], scenarios: list[str]) -> list[str]:
    """The backbones that can train all of `scenarios` now (runnable_scenarios); says on the page which cannot."""
    if not any(SCENARIOS[name].pretrained for name in scenarios):
        return backbones
    missing = [backbone for backbone in backbones if _weights_missing(backbone) is not None]
    if missing:
        st.error(private(f"The ImageNet weights of {', '.join(missing)} are not on this machine and cannot be "
                         f"downloaded (no internet?): {'they are' if len(missing) > 1 else 'it is'} left out. To "
                         f"compare {'them' if len(missing) > 1 else 'it'}, {_instead(backbones)}restart the app with "
                         "STUDIO_WEIGHTS set to a folder of BACKBONE.pth weights files."))
    return [backbone for backbone in backbones if backbone not in missing]


def error_message(message: str, setting: str | None) -> str:
    """A library error in the dashboard's terms: what went wrong, then what to do here (without server paths
    in shared mode)."""
    hint = HINTS.get(setting)
    return private(f"{message} {hint}" if hint else message)


def show_error(exc: StudioError | ValueError) -> None:
    st.error(error_message(str(exc), getattr(exc, "setting", None)))


def run_label(run: RunRecord, details: bool = True) -> str:
    """How a run is named on the pages; `details` adds its best accuracy, or that no epoch finished, and its
    status when it did not complete."""
    label = f"{run.scenario} · {run.backbone} · {run.dataset.root.name} · {run.created.replace('T', ' ')[:16]}"
    if not details:
        return label
    label += f" · best {accuracy_text(run.best_val())}" if run.trained else " · no epoch finished"
    return label + (f" ({run.status})" if run.status != "completed" else "")


def where_trained(run: RunRecord) -> list[str]:
    """Where and how the run was trained, line by line, and whether its pictures are on this machine."""
    lines = run.placement.describe() if run.placement else ["not recorded: saved by an older version of the studio"]
    if not run.dataset.root.is_dir():
        lines.append(f"its data set's folder, {run.dataset.path}, is not on this machine: its numbers and model are "
                     "here, its pictures are not (put the data set at that path to see them)")
    return lines


def run_labels(runs: list[RunRecord], details: bool = False) -> dict[str, str]:
    """run_label by run id, one different label per run: runs that would share one get the end of their id."""
    return _told_apart({run.id: run_label(run, details) for run in runs})


def short_labels(runs: list[RunRecord]) -> dict[str, str]:
    """By run id, the shortest label that tells these runs apart, for tables and charts on a phone: the scenario,
    then of the backbone, the data set, the day and the time only what differs among them (run_labels are whole)."""
    parts = {run.id: {"backbone": run.backbone, "data set": run.dataset.root.name, "day": run.created[5:10],
                      "time": run.created[11:16]} for run in runs}
    differ = [name for name in ("backbone", "data set", "day", "time") if len({p[name] for p in parts.values()}) > 1]
    if "day" in differ:  # the day alone does not place a run: its time goes with it
        differ = [name for name in differ if name != "time"]
        for part in parts.values():
            part["day"] += f" {part['time']}"
    return _told_apart({run.id: " · ".join([run.scenario, *(parts[run.id][name] for name in differ)])
                        for run in runs})


def _told_apart(labels: dict[str, str]) -> dict[str, str]:
    """The labels, those that more than one run shares followed by the end of each run's id."""
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {run_id: f"{label} · {run_id[-4:]}" if label in repeated else label for run_id, label in labels.items()}


def pick_runs(label: str, none_yet: str, trained_only: bool = False) -> list[RunRecord]:
    """Saved runs to show, the latest finetune and frozen ones of one data set chosen by default; stops the page
    if none exist. With `trained_only`, runs stopped before their first epoch finished are not offered. In shared
    mode only the runs of the data sets this session may train on are offered."""
    listing = list_runs()
    for damaged in listing.damaged:
        st.warning(private(f"Skipped a damaged run folder: {damaged.reason}"))
    runs = [run for run in state.visible(listing.runs) if run.trained or not trained_only]
    if not runs:
        st.info(none_yet)
        st.stop()
    by_id, labels = {run.id: run for run in runs}, run_labels(runs, details=True)
    chosen = st.multiselect(label, list(by_id), default=[r.id for r in default_runs(runs)],
                            format_func=labels.get, key="runs")
    return [by_id[run_id] for run_id in chosen]


FIRST_COLUMNS = ("best val acc", "final val acc", "test acc")  # after the run's label: seen first on a phone
LABEL_COLUMN = {"run": st.column_config.TextColumn("run", pinned=True)}  # for st.dataframe(column_config=...)


def summary_row(run: RunRecord, label: str, name: str) -> dict[str, str]:
    """The run's summary row (core.runs) under its short label, its accuracies first and its whole name last,
    without server paths in shared mode."""
    row = run.summary(paths=not state.settings().shared)
    rest = {key: value for key, value in row.items() if key not in ("run", *FIRST_COLUMNS)}
    return {"run": label, **{key: row[key] for key in FIRST_COLUMNS}, **rest, "whole name": name}


def phase_rows(runs: list[RunRecord], labels: dict[str, str]) -> list[dict[str, str]]:
    """Each run's recipe, phase by phase: what trained, for how long, with which optimiser, schedule and peak rates."""
    return [{"run": labels[run.id], "recipe": run.config.recipe, "phase": phase.name, "trains": phase.trains,
             "epochs": str(phase.epochs) if phase.epochs else "to convergence", "optimiser": phase.optimizer,
             "schedule": phase.schedule, "peak rates": ", ".join(f"{group} {rate:.1e}"
                                                                 for group, rate in phase.rates.items()) or "-",
             "outcome": phase.outcome or "-"}
            for run in runs for phase in run.phase_records()]


def side_by_side(runs: list[RunRecord], most: int = 3):
    """(column, run) pairs: the runs side by side, at most `most` columns, further runs below the first ones."""
    return zip(st.columns(min(len(runs), most)) * len(runs), runs)


BUNDLE_CONTENTS = "The model, its classes and preprocessing, and a model card, in one zip"
BUNDLES = {  # format: (its short name, what it is)
    "onnx": ("ONNX", f"{BUNDLE_CONTENTS}; run it with onnxruntime."),
    "pt2": ("PyTorch .pt2", f"{BUNDLE_CONTENTS}; load it with torch.export.load(path).module()."),
    "torchscript": ("TorchScript", f"{BUNDLE_CONTENTS}. TorchScript is deprecated by PyTorch: prefer ONNX or .pt2."),
}


def download_bundles(run: RunRecord, key: str) -> None:
    """A format to choose (ONNX, PyTorch .pt2, legacy TorchScript), a button that makes its bundle with a spinner
    (exporting and checking it against PyTorch takes a while), then the bundle's download button."""
    if not run.trained:
        st.caption("No epoch finished, so its last layer was never trained: there is no model to take away.")
        return
    fmt = st.segmented_control("Bundle", list(BUNDLES), format_func=lambda name: BUNDLES[name][0], default="onnx",
                               key=f"{key}-format-{run.id}", help=" ".join(f"{name}: {text}" for name, text in
                                                                         BUNDLES.values()))
    if fmt is None:
        return
    name, made, slot = BUNDLES[fmt][0], f"{key}-made-{run.id}", st.empty()
    if st.session_state.get(made) != fmt and not slot.button(f"Make the {name} bundle", key=f"{key}-make-{run.id}",
                                                             help=BUNDLES[fmt][1]):
        return
    slot.empty()
    with st.spinner(f"Exporting to {name} and checking it against PyTorch..."):
        data = state.bundle(run, fmt)
    st.session_state[made] = fmt
    st.download_button(f"Download ({len(data) / 2**20:.1f} MB)", data=data, file_name=f"{run.id}-{fmt}.zip",
                       mime="application/zip", key=f"{key}-{fmt}-{run.id}", on_click="ignore",
                       icon=":material/download:", type="primary")


def photo_input() -> tuple[str, bytes, Image.Image]:
    """An uploaded or camera photo: its name, its bytes and the picture, decoded as the models will see it.
    Stops the page, with the reason, until there is one that can be read."""
    source = st.radio("Picture", ["Upload a file", "Take a photo"], horizontal=True, label_visibility="collapsed")
    if source == "Upload a file":
        # Every file is accepted here and checked below: the uploader's own refusal of a type is a red chip with
        # the reason in a tooltip, and leaves the previous file's answers on the page.
        upload = st.file_uploader("Photo (JPEG, PNG, WebP, GIF, BMP or TIFF)", max_upload_size=MAX_PHOTO_MB)
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
        st.error(f"{exc} Choose a picture file ({', '.join(PHOTO_TYPES)}).")
        st.stop()


def picture_gallery(items: list[tuple[Path, str]], run: RunRecord | None = None, heat: bool = False) -> None:
    """Pictures with their captions, as many to a row as fit (two on a phone); with `heat`, each shows where the
    run's model looked (Grad-CAM of its predicted class)."""
    with st.container(horizontal=True, gap="small"):
        for path, caption in items:
            try:
                shown = state.heat_map(run, str(path)) if heat and run else state.thumbnail(str(path))
                st.image(shown, caption=caption, width=GALLERY_WIDTH)
            except StudioError:
                st.caption(f"{caption}: {path.name} is no longer readable", width=GALLERY_WIDTH)


def clicked(chart_key: str) -> list | None:
    """The customdata of the point last clicked on the chart of `chart_key` (st.plotly_chart with on_select), or
    None when none is selected."""
    event = st.session_state.get(chart_key)
    points = (event or {}).get("selection", {}).get("points", [])
    return next((point["customdata"] for point in points if "customdata" in point), None)


class ProgressBar:
    """A progress bar that appears at the first (done, total) report only: nothing flashes when the work was kept."""

    def __init__(self, text: str):
        self.text, self.slot = text, st.empty()

    def __call__(self, done: int, total: int) -> None:
        self.slot.progress(min(done / max(total, 1), 1.0), text=f"{self.text} {done} of {total}")

    def phase(self, phase: str, done: int, total: int) -> None:
        self.text = HEALTH_PHASES.get(phase, phase)
        self(done, total)

    def close(self) -> None:
        self.slot.empty()


HEALTH_PHASES = {"reading": "Reading every file (exact duplicates)...", "features": "ImageNet features of picture",
                 "labels": "Checking the labels (cross-validated classifier)..."}


def per_class_rows(runs: list[RunRecord], labels: dict[str, str]) -> list[dict]:
    """Precision, recall, F1 and pictures per class of each run's kept weights on its validation pictures."""
    return [{"run": labels[run.id], "class": metrics.name, "precision": round(metrics.precision, 3),
             "recall": round(metrics.recall, 3), "F1": round(metrics.f1, 3), "pictures": metrics.support}
            for run in runs if run.val_predictions
            for metrics in class_metrics(run.val_predictions, run.class_names)]


def clickable_confusion(run: RunRecord, label: str, heat: bool) -> None:
    """The run's confusion matrix, whose cells open their pictures: a click on a cell, or the cell chosen below it."""
    figure = charts.confusion_matrix(run, label)
    if figure is None:
        st.info(f"{label}: {charts.NOTHING_TO_CHART}.")
        return
    chart_key, cell_key = f"confusion-{run.id}", f"cell-{run.id}"

    def copy_click() -> None:
        if (cell := clicked(chart_key)) is not None:
            st.session_state[cell_key] = (cell[0], cell[1])

    st.plotly_chart(figure, key=chart_key, on_select=copy_click, selection_mode="points", config=charts.PLOTLY_CONFIG)
    names, counts = run.class_names, run.val_predictions.confusion(len(run.class_names))
    cells = [(actual, predicted) for actual in range(len(names)) for predicted in range(len(names))]
    cell = st.selectbox("Pictures of a cell", cells, index=None, key=cell_key, placeholder="Click a cell, or choose it",
                        format_func=lambda c: f"{names[c[0]]} predicted as {names[c[1]]} ({counts[c[0]][c[1]]})")
    if cell is None:
        return
    pictures = cell_pictures(run, *cell)
    shown = pictures[:CELL_PICTURES]
    if not pictures:
        st.caption("No picture in this cell.")
    picture_gallery([(picture.path, picture.path.name) for picture in shown], run, heat)
    if len(pictures) > len(shown):
        st.caption(f"The first {len(shown)} of {len(pictures)} pictures.")


CELL_PICTURES = 24  # pictures of a confusion cell shown at once
