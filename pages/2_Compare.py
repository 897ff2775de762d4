"""Compare: saved runs side by side (by default the latest finetune and frozen runs)."""
import streamlit as st

from dashboard import charts
from dashboard.widgets import (
    LABEL_COLUMN,
    clickable_confusion,
    download_bundles,
    per_class_rows,
    phase_rows,
    pick_runs,
    picture_gallery,
    private,
    run_labels,
    short_labels,
    side_by_side,
    summary_row,
    where_trained,
)

st.set_page_config(page_title="Compare · Transfer Learning Studio", page_icon="📊", layout="wide")
st.title("Compare")

runs = pick_runs("Runs", "No saved runs yet. Train the finetune and frozen scenarios on the Train page, "
                         "then come back.")
if not runs:
    st.info("Pick one or more runs.")
    st.stop()

labels, names = short_labels(runs), run_labels(runs)  # short in tables and charts, whole where there is room

st.subheader("Summary")
st.dataframe([summary_row(run, labels[run.id], names[run.id]) for run in runs], hide_index=True,
             column_config=LABEL_COLUMN)
st.caption("Best: the epoch with the highest validation accuracy, whose weights were kept, as in the tutorial; "
           "chosen on the validation pictures, it is a little optimistic. Final: the last epoch trained. Test: the "
           "kept weights on test/, pictures no choice looked at (when the data set has them). In brackets, the 95% "
           "interval that the number of pictures allows (Wilson): two runs whose intervals overlap widely may not "
           "differ at all. Runs that repeat one recipe with other seeds are charted as their mean with a 95% band; "
           "the Experiments page repeats a recipe for you.")

with st.expander("Where each run was trained: hosts, devices, processes"):
    for run in runs:
        st.markdown(f"**{names[run.id]}**\n" + "\n".join(f"- {private(line)}" for line in where_trained(run)))
    st.caption("A run trained on several processes (torchrun) or on another machine is an ordinary run here. Copied "
               "or shared runs folders show their runs with the hosts and devices they were trained on; their "
               "pictures are shown when the data set is at the same path on this machine.")

st.subheader("Per class (validation set, kept weights)")
st.dataframe(per_class_rows(runs, labels), hide_index=True, column_config=LABEL_COLUMN)
st.caption("Precision: of the pictures a model called this class, the share that are. Recall: of this class's "
           "pictures, the share it found. F1 balances the two. Accuracy alone hides a class that is often missed, "
           "more so when the classes are of unequal size. The Mistakes page shows why.")

charted = charts.charted(runs)
if charted:
    left, right = st.columns(2)
    left.plotly_chart(charts.overlay(runs, "val_acc", "Validation accuracy", labels), config=charts.PLOTLY_CONFIG)
    right.plotly_chart(charts.overlay(runs, "val_loss", "Validation loss", labels), config=charts.PLOTLY_CONFIG)
if len(charted) < len(runs):
    st.caption(f"Left out of the charts ({charts.NOTHING_TO_CHART}): "
               f"{', '.join(labels[run.id] for run in runs if run not in charted)}.")

st.subheader("Train against validation")
for column, run in side_by_side(runs):
    if figure := charts.train_against_val(run, labels[run.id]):
        column.plotly_chart(figure, key=f"history-{run.id}", config=charts.PLOTLY_CONFIG)
    else:
        column.info(f"{labels[run.id]}: {charts.NOTHING_TO_CHART}.")

left, right = st.columns(2)
if charted:
    left.plotly_chart(charts.seconds_per_epoch(runs, labels, names), config=charts.PLOTLY_CONFIG)
    left.caption(f"{charts.PER_EPOCH}: what one epoch of training and validation took. {charts.ONE_OFF}: the rest "
                 "of the run, spent once. The summary's s / epoch spreads the whole run, one-off time included, "
                 "over its epochs.")
right.plotly_chart(charts.parameters(runs, labels, names), config=charts.PLOTLY_CONFIG)

with st.expander("How each run learned: its recipe, phase by phase, and each layer group's rate"):
    st.dataframe(phase_rows(runs, labels), hide_index=True, column_config=LABEL_COLUMN)
    if figure := charts.layer_rates(runs, labels):
        st.plotly_chart(figure, config=charts.PLOTLY_CONFIG, key="layer_rates")
    st.caption("Runs saved before recipes had phases trained with the tutorial's, in one phase. The layer groups: "
               "with a rate spread, the backbone's first half, its second half and the head, as fastai splits them.")

st.subheader("Confusion matrices (validation set, kept weights)")
st.caption("Click a cell to see its pictures.")
cell_heat = st.toggle("Show where each model looked on a cell's pictures (Grad-CAM)", value=False, key="cell_heat")
for column, run in side_by_side(runs):
    with column:
        clickable_confusion(run, labels[run.id], cell_heat)

st.subheader("Take a model away")
for column, run in side_by_side(runs):
    with column:
        st.caption(labels[run.id])
        download_bundles(run, key="compare")

st.subheader("Predictions on validation pictures")
show_all = st.toggle(f"Show every picture, {charts.GALLERY_PAGE} to a page (mistakes come first)", value=False,
                     key="gallery_all")
show_heat = st.toggle("Show Grad-CAM heat maps (where each model looked)", value=False, key="gallery_heat")
expand = True  # the first gallery only: a phone scrolls past each one
for run in runs:
    pictures = run.val_pictures(mistakes_first=True)
    if not pictures:
        st.caption(f"{names[run.id]}: no validation predictions were saved.")
        continue
    mistakes = run.val_predictions.mistakes
    st.markdown(f"**{names[run.id]}**: {mistakes} mistake(s) in {len(pictures)} pictures")
    pages = charts.pages(len(pictures)) if show_all else 1
    with st.expander(f"Pictures of {labels[run.id]}", expanded=expand, key=f"gallery-{run.id}"):
        expand = False
        page = st.number_input(f"Page (of {pages})", 1, pages, key=f"page-{run.id}") if pages > 1 else 1
        shown = charts.page_of(pictures, page) if show_all else charts.first_look(pictures, mistakes)
        if not show_all and len(shown) < len(pictures):
            st.caption(charts.hidden_text(len(shown), mistakes, len(pictures)))
        items = []
        for picture in shown:
            caption = f"{'✅' if picture.correct else '❌'} predicted: {run.class_names[picture.predicted]}"
            if not picture.correct:
                caption += f" (is {run.class_names[picture.label]})"
            items.append((picture.path, caption))
        picture_gallery(items, run, show_heat)
