"""Mistakes: why a model is wrong. Its worst mistakes, where two runs part, and maps of the features each model sees,
beside those of the untouched ImageNet backbone.

Every control and what comes from the saved predictions show at once; what needs a model on the pictures (the worst
mistakes, the maps) is computed below them with its progress, and the maps only when asked for."""
import streamlit as st

from core.analysis import MAP_METHODS, disagreements, losses
from core.runs import picture_path
from dashboard.feature_maps import (
    chosen_point,
    draw_maps,
    maps_kept,
    outputs_of,
)
from dashboard.widgets import (
    pick_runs,
    picture_gallery,
    run_labels,
    short_labels,
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
labels, short = run_labels(runs), short_labels(runs)
heat = st.toggle("Show where each model looked (Grad-CAM)", value=False, key="mistakes_heat")

st.subheader("The worst mistakes")
count = st.slider("Pictures per run", 3, 24, 6, key="top_losses")
st.caption("The validation pictures with the highest loss: wrong, and sure of it. The number is the model's "
           "probability of its answer.")
worst = st.container()  # filled last but one: it needs each model on its validation pictures

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
st.caption("Each validation picture placed by the features the model's last layer sees (the layer before the head), "
           "in two dimensions: crosses are the model's mistakes. The untouched ImageNet backbone is the starting "
           "point: a frozen run keeps its features, a finetuned one moves them, one trained from scratch has to "
           "find its own. Click a point to see its picture.")
method = st.radio("Map", list(MAP_METHODS), format_func=MAP_METHODS.get, horizontal=True, key="map_method",
                  on_change=lambda: st.session_state.pop("map_picture", None))
drawn = st.toggle("Draw the feature maps", key="draw_maps",  # on by itself once the maps' features are kept
                  value=st.session_state["draw_maps"] if "draw_maps" in st.session_state else maps_kept(runs),
                  help="The first time, each model and the untouched ImageNet backbone see every validation picture "
                       "once (about a second per 30 pictures and model on a CPU); then they are kept.")
maps = st.container()

with worst:
    outputs = outputs_of(runs, labels)
    for column, run in side_by_side(runs):
        with column:
            st.markdown(f"**{short[run.id]}**")
            names = run.class_names
            picture_gallery([(path, f"{'✅' if item.predicted == item.label else '❌'} {names[item.predicted]} "
                                    f"{item.probability:.0%} (is {names[item.label]})")
                             for item in losses(run, outputs[run.id])[:count]
                             if (path := picture_path(run.dataset.root, item.file))], run, heat)

with maps:
    if not drawn:
        st.caption("Turn on 'Draw the feature maps' to compute and draw them.")
        st.stop()
    draw_maps(runs, short, outputs, method)
    if point := chosen_point(runs, short, outputs):
        run, path, lines = point
        st.markdown("\n".join(lines))
        picture_gallery([(path, path.name)], run, heat)
        if st.button("Clear the chosen point", key="clear_map_picture"):
            st.session_state.pop("map_picture", None)
            st.rerun()
