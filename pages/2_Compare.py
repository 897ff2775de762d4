"""Compare: saved runs side by side (by default the latest finetune and frozen runs)."""
import streamlit as st

from core.errors import ImageError
from dashboard import charts, state
from dashboard.widgets import download_bundles, pick_runs, run_labels, side_by_side, summary_row

st.set_page_config(page_title="Compare · Transfer Learning Studio", page_icon="📊", layout="wide")
st.title("Compare")

runs = pick_runs("Runs", "No saved runs yet. Train the finetune and frozen scenarios on the Train page, "
                         "then come back.")
if not runs:
    st.info("Pick one or more runs.")
    st.stop()

labels = run_labels(runs)

st.subheader("Summary")
st.dataframe([summary_row(run, labels[run.id]) for run in runs], hide_index=True)
st.caption("Best: the epoch with the highest validation accuracy, whose weights were kept, as in the tutorial. "
           "Final: the last epoch trained.")

left, right = st.columns(2)
left.plotly_chart(charts.overlay(runs, "val_acc", "Validation accuracy", labels))
right.plotly_chart(charts.overlay(runs, "val_loss", "Validation loss", labels))

st.subheader("Train against validation")
for column, run in side_by_side(runs):
    column.plotly_chart(charts.train_against_val(run, labels[run.id]), key=f"history-{run.id}")

left, right = st.columns(2)
left.plotly_chart(charts.seconds_per_epoch(runs, labels))
right.plotly_chart(charts.parameters(runs, labels))

st.subheader("Confusion matrices (validation set, kept weights)")
for column, run in side_by_side(runs):
    column.plotly_chart(charts.confusion_matrix(run, labels[run.id]), key=f"confusion-{run.id}")

st.subheader("Take a model away")
for column, run in side_by_side(runs):
    with column:
        st.caption(labels[run.id])
        download_bundles(run, key="compare")

st.subheader("Predictions on validation pictures")
show_all = st.toggle("Show every picture (mistakes come first)", value=False)
show_heat = st.toggle("Show Grad-CAM heat maps (where each model looked)", value=False)
for run in runs:
    pictures = run.val_pictures(mistakes_first=True)
    if not pictures:
        st.caption(f"{labels[run.id]}: no validation predictions were saved.")
        continue
    st.markdown(f"**{labels[run.id]}**: {run.val_predictions.mistakes} mistake(s) in {len(pictures)} pictures")
    columns = st.columns(6)
    for index, picture in enumerate(pictures if show_all else pictures[:12]):
        caption = f"{'✅' if picture.correct else '❌'} predicted: {run.class_names[picture.predicted]}"
        if not picture.correct:
            caption += f" (is {run.class_names[picture.label]})"
        try:
            path = str(picture.path)
            shown = state.heat_map(str(run.path), path) if show_heat else state.thumbnail(path)
            columns[index % 6].image(shown, caption=caption, width="stretch")
        except ImageError:
            columns[index % 6].caption(f"{caption}: {picture.path.relative_to(run.dataset.root)} is no longer readable")
