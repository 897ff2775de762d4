"""The Mistakes page's model outputs and feature maps: each run's model on its validation pictures, the untouched
ImageNet backbone's features of the same pictures, the maps side by side, and what a clicked point is."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.analysis import run_outputs
from core.errors import StudioError
from core.features import PictureOutputs
from core.health import reference_features
from core.models import BACKBONES
from core.runs import RunRecord, default_runs_dir, picture_path
from dashboard import charts, state
from dashboard.widgets import ProgressBar, clicked, private, show_error, side_by_side

CHOSEN = "map_picture"  # session state: (the map's title, the run's folder, the picture's file) of the last click


def outputs_of(runs: list[RunRecord], labels: dict[str, str]) -> dict[str, PictureOutputs]:
    """Each run's features and logits on its validation pictures: computed once (with a progress bar), then kept.
    Stops the page with the reason when a run's model cannot be loaded."""
    found = {}
    for run in runs:
        bar = ProgressBar(f"{labels[run.id]}: its model on validation picture")
        try:
            found[run.id] = run_outputs(run, "val", str(state.device()), progress=bar)
        except StudioError as exc:
            show_error(exc)
            st.stop()
        finally:
            bar.close()
    return found


def _references(runs: list[RunRecord]) -> dict[tuple, RunRecord]:
    """(data set, backbone) -> the first run of it: one untouched ImageNet map for each."""
    found: dict[tuple, RunRecord] = {}
    for run in runs:
        found.setdefault((run.dataset.root, run.backbone), run)
    return found


def maps_kept(runs: list[RunRecord]) -> bool:
    """Whether every map's features are kept already, so that drawing the maps computes nothing."""
    try:
        return all(run_outputs(run, only_kept=True) is not None for run in runs) and all(
            reference_features(state.scan(run.dataset.root), run.val_predictions.files, default_runs_dir(),
                               run.backbone, only_kept=True) is not None for run in _references(runs).values())
    except (StudioError, OSError):
        return False


def _reference_map(run: RunRecord, files: list[str]) -> tuple | None:
    """(title, run, files, features, None) of the untouched backbone on `files`, with a progress bar; None, with
    the reason on the page, when its weights cannot be had."""
    title = f"{BACKBONES[run.backbone].title}, ImageNet only"
    bar = ProgressBar(f"{title}: features of validation picture")
    try:
        scan = state.scan(run.dataset.root)
        scan.raise_if_invalid()
        reference = reference_features(scan, files, default_runs_dir(), run.backbone, str(state.device()),
                                       progress=bar)
    except StudioError as exc:
        st.caption(private(f"No map of the untouched {BACKBONES[run.backbone].title}: {exc}"))
        return None
    finally:
        bar.close()
    rows = reference.rows(files)
    return title, run, [reference.files[row] for row in rows], reference.features[rows], None


def draw_maps(runs: list[RunRecord], labels: dict[str, str], outputs: dict[str, PictureOutputs], method: str) -> None:
    """The untouched backbone's map of each data set and backbone, then each run's, side by side; a click on a
    point is kept in the session (CHOSEN)."""
    maps = []  # (title, run, files, features, predictions; None for the untouched backbone)
    references = _references(runs)
    for run in runs:
        files = outputs[run.id].files
        if references.get((run.dataset.root, run.backbone)) is run and (found := _reference_map(run, files)):
            maps.append(found)
        said = dict(zip(run.val_predictions.files, run.val_predictions.predictions))
        maps.append((labels[run.id], run, files, outputs[run.id].features, [said[file] for file in files]))
    for column, (title, run, files, features, predictions) in side_by_side(maps):
        actual = dict(zip(run.val_predictions.files, run.val_predictions.labels))
        figure = charts.feature_map(state.feature_map(features, method), files, [actual[file] for file in files],
                                    predictions, run.class_names, title)
        key = f"map-{method}-{title}"

        def remember_click(key=key, run=run, title=title) -> None:
            if (point := clicked(key)) is not None:
                st.session_state[CHOSEN] = (title, str(run.path), point[0])

        column.plotly_chart(figure, key=key, on_select=remember_click, selection_mode="points",
                            config=charts.PLOTLY_CONFIG)


def chosen_point(runs: list[RunRecord], labels: dict[str, str],
                 outputs: dict[str, PictureOutputs]) -> tuple[RunRecord, Path, list[str]] | None:
    """The clicked point as (its run, its picture, lines to show): the map it came from, its true class, and each
    run's answer with its probability. None when no point is chosen or its run is no longer shown."""
    chosen = st.session_state.get(CHOSEN)
    run = next((run for run in runs if chosen and str(run.path) == chosen[1]), None)
    if run is None or not (path := picture_path(run.dataset.root, chosen[2])):
        return None
    title, _, file = chosen
    names = run.class_names
    truth = dict(zip(run.val_predictions.files, run.val_predictions.labels))[file]
    lines = [f"**Chosen point:** `{file}`, from the map *{title}*. It is **{names[truth]}**."]
    for other in runs:
        rows = outputs[other.id].rows([file])
        if len(rows) and other.dataset.root == run.dataset.root:
            probabilities = outputs[other.id].probabilities[rows[0]]
            answer = int(probabilities.argmax())
            lines.append(f"- {labels[other.id]}: {'✅' if answer == truth else '❌'} {other.class_names[answer]} "
                         f"({probabilities[answer]:.0%})")
    return run, path, lines
