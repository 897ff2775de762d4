"""Compare: saved runs side by side (by default the latest finetune and frozen runs)."""
from pathlib import Path

import streamlit as st

from core.errors import ImageError
from core.images import open_image
from dashboard import cache, charts
from dashboard.widgets import download_bundles, pick_runs

st.set_page_config(page_title="Compare · Transfer Learning Studio", page_icon="📊", layout="wide")
st.title("Compare")

runs = pick_runs("Runs", "No saved runs yet. Train the finetune and frozen scenarios on the Train page, then come back.")
if not runs:
    st.info("Pick one or more runs.")
    st.stop()

labels = {run.id: f"{run.scenario} · {run.backbone} · {run.created[5:16].replace('T', ' ')}" for run in runs}

st.subheader("Summary")
st.dataframe({
    "run": [labels[r.id] for r in runs],
    "status": [r.status for r in runs],
    "best val acc": [f"{r.best_val_acc:.4f} (epoch {r.best_epoch})" if r.best_epoch else "-" for r in runs],
    "final val acc": [f"{r.final.val_acc:.4f}" if r.final else "-" for r in runs],
    "total time": [f"{r.seconds:.1f} s" for r in runs],
    "s / epoch": [f"{r.seconds / max(len(r.history), 1):.1f}" for r in runs],
    "trainable params": [f"{r.trainable_params:,}" for r in runs],
    "total params": [f"{r.total_params:,}" for r in runs],
    "weights": [r.weights_source.describe() for r in runs],
}, hide_index=True)
st.caption("Best: the epoch with the highest validation accuracy, whose weights were kept, as in the tutorial. "
           "Final: the last epoch trained.")

left, right = st.columns(2)
left.plotly_chart(charts.overlay(runs, "val_acc", "Validation accuracy", labels))
right.plotly_chart(charts.overlay(runs, "val_loss", "Validation loss", labels))

st.subheader("Train against validation")
for column, run in zip(st.columns(min(len(runs), 3)) * len(runs), runs):
    column.plotly_chart(charts.train_against_val(run, labels[run.id]))

left, right = st.columns(2)
left.plotly_chart(charts.seconds_per_epoch(runs, labels))
right.plotly_chart(charts.parameters(runs, labels))

st.subheader("Confusion matrices (validation set, kept weights)")
for column, run in zip(st.columns(min(len(runs), 3)) * len(runs), runs):
    column.plotly_chart(charts.confusion_matrix(run, labels[run.id]))


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail(path: str):
    picture = open_image(Path(path))
    picture.thumbnail((220, 220))
    return picture


st.subheader("Take a model away")
for column, run in zip(st.columns(min(len(runs), 3)) * len(runs), runs):
    with column:
        st.caption(labels[run.id])
        download_bundles(run, key="compare")

st.subheader("Predictions on validation pictures")
show_all = st.toggle("Show every picture (mistakes come first)", value=False)
show_heat = st.toggle("Show Grad-CAM heat maps (where each model looked)", value=False)
for run in runs:
    predictions = run.val_predictions
    if not predictions:
        st.caption(f"{labels[run.id]}: no validation predictions were saved.")
        continue
    items = sorted(zip(predictions["files"], predictions["labels"], predictions["predictions"]),
                   key=lambda item: item[1] == item[2])
    mistakes = sum(actual != predicted for _, actual, predicted in items)
    st.markdown(f"**{labels[run.id]}**: {mistakes} mistake(s) in {len(items)} pictures")
    root = Path(run.dataset["path"])
    columns = st.columns(6)
    for index, (file, actual, predicted) in enumerate(items if show_all else items[:12]):
        mark = "✅" if actual == predicted else "❌"
        caption = f"{mark} predicted: {run.class_names[predicted]}"
        if actual != predicted:
            caption += f" (is {run.class_names[actual]})"
        try:
            shown = cache.heat_map(run.id, str(run.path), str(root / file)) if show_heat else thumbnail(str(root / file))
            columns[index % 6].image(shown, caption=caption, width="stretch")
        except ImageError:
            columns[index % 6].caption(f"{caption}: {file} is no longer readable")
