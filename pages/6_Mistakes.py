"""Mistakes: why a model is wrong. Its worst mistakes, where two runs part, and maps of the features each model sees,
beside those of the untouched ImageNet backbone."""
import streamlit as st

from core.analysis import MAP_METHODS, disagreements, losses, run_outputs
from core.device import pick_device
from core.errors import StudioError
from core.health import dataset_features
from core.models import BACKBONES
from core.runs import default_runs_dir, picture_path
from dashboard import charts, state
from dashboard.widgets import (
    ProgressBar,
    clicked,
    pick_runs,
    picture_gallery,
    private,
    run_labels,
    show_error,
    side_by_side,
)

st.set_page_config(page_title="Mistakes · Transfer Learning Studio", page_icon="🧐", layout="wide")
st.title("Mistakes")
st.caption("Accuracy says how often a model is wrong; this page shows where and why: the pictures it got most wrong, "
           "those on which two runs part, and how each model arranges the pictures in its feature space.")

runs = [run for run in pick_runs("Runs", "No saved runs yet. Train the finetune and frozen scenarios on the Train "
                                 "page, then come back.", trained_only=True) if run.val_predictions]
if not runs:
    st.info("Pick one or more runs.")
    st.stop()
labels = run_labels(runs)
device = str(pick_device("auto"))
heat = st.toggle("Show where each model looked (Grad-CAM)", value=False, key="mistakes_heat")


def outputs_of(run):
    """The run's features and logits on its validation pictures: computed once (with a progress bar), then kept."""
    bar = ProgressBar(f"{labels[run.id]}: features of picture")
    try:
        return run_outputs(run, "val", device, progress=bar)
    finally:
        bar.close()


try:
    outputs = {run.id: outputs_of(run) for run in runs}
except StudioError as exc:
    show_error(exc)
    st.stop()

st.subheader("The worst mistakes")
count = st.slider("Pictures per run", 3, 24, 6, key="top_losses")
st.caption("The validation pictures with the highest loss: wrong, and sure of it. The number is the model's "
           "probability of its answer.")
for column, run in side_by_side(runs):
    with column:
        st.markdown(f"**{labels[run.id]}**")
        names = run.class_names
        picture_gallery([(path, f"{'✅' if item.predicted == item.label else '❌'} {names[item.predicted]} "
                                f"{item.probability:.0%} (is {names[item.label]})")
                         for item in losses(run, outputs[run.id])[:count]
                         if (path := picture_path(run.dataset.root, item.file))], run, heat)

st.subheader("Where two runs disagree")
if len(runs) < 2:
    st.info("Choose two runs (say finetune and frozen) to see the pictures on which one is right and the other wrong.")
else:
    first, second = runs[:2]
    parted = disagreements(first, second)
    if parted is None:
        st.info(f"{labels[first.id]} and {labels[second.id]} share no validation picture: nothing to pair.")
    else:
        st.markdown(f"Of {parted.pictures} validation pictures, **{labels[first.id]}** alone is right on "
                    f"{len(parted.first_only)}, **{labels[second.id]}** alone on {len(parted.second_only)}, and both "
                    f"are wrong on {parted.both_wrong}.")
        st.caption(f"McNemar's exact test: p = {parted.p_value:.2g}. That is how often two equally good models would "
                   "part this unevenly; above 0.05 the difference may well be luck.")
        for column, (run, items) in zip(st.columns(2), ((first, parted.first_only), (second, parted.second_only))):
            with column:
                st.markdown(f"**{labels[run.id]}** right, the other wrong ({len(items)})")
                names = run.class_names
                picture_gallery([(path, f"is {names[item.label]}; the other says "
                                        f"{names[item.second if run is first else item.first]}")
                                 for item in items if (path := picture_path(run.dataset.root, item.file))], run, heat)

st.subheader("Feature maps")
method = st.radio("Map", list(MAP_METHODS), format_func=MAP_METHODS.get, horizontal=True, key="map_method")
st.caption("Each validation picture placed by the features the model's last layer sees (the layer before the head), "
           "in two dimensions: crosses are the model's mistakes. The untouched ImageNet backbone is the starting "
           "point: a frozen run keeps its features, a finetuned one moves them, one trained from scratch has to "
           "find its own. Click a point to see its picture.")
maps = []  # (title, run, files, features, predictions; None for the untouched backbone)
references = set()  # (data set, backbone) whose ImageNet map is drawn
for run in runs:
    files = outputs[run.id].files
    if (run.dataset.root, run.backbone) not in references:
        references.add((run.dataset.root, run.backbone))
        bar = ProgressBar(f"{BACKBONES[run.backbone].title} on ImageNet: features of picture")
        try:
            scan = state.scan(run.dataset.root)
            scan.raise_if_invalid()
            reference = dataset_features(scan, default_runs_dir(), run.backbone, device=device, progress=bar)
        except StudioError as exc:
            st.caption(private(f"No map of the untouched {BACKBONES[run.backbone].title}: {exc}"))
        else:
            rows = reference.rows(files)
            maps.append((f"{BACKBONES[run.backbone].title}, ImageNet only (untouched)", run,
                         [reference.files[row] for row in rows], reference.features[rows], None))
        finally:
            bar.close()
    said = dict(zip(run.val_predictions.files, run.val_predictions.predictions))
    maps.append((labels[run.id], run, files, outputs[run.id].features, [said[file] for file in files]))
for column, (title, run, files, features, predictions) in side_by_side(maps):
    actual = dict(zip(run.val_predictions.files, run.val_predictions.labels))
    figure = charts.feature_map(state.feature_map(features, method), files, [actual[file] for file in files],
                                predictions, run.class_names, title)
    key = f"map-{method}-{title}"

    def remember_click(key=key, run=run) -> None:
        if (point := clicked(key)) is not None:
            st.session_state["map_picture"] = (str(run.path), point[0])

    column.plotly_chart(figure, key=key, on_select=remember_click, selection_mode="points",
                        config=charts.PLOTLY_CONFIG)
if chosen := st.session_state.get("map_picture"):
    run = next((run for run in runs if str(run.path) == chosen[0]), None)
    if run and (path := picture_path(run.dataset.root, chosen[1])):
        st.markdown(f"**Chosen point:** {chosen[1]}")
        picture_gallery([(path, chosen[1])], run, heat)
