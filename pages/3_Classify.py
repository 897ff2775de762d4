"""Classify: a photo through every chosen model, side by side."""
import streamlit as st

from core.errors import StudioError
from dashboard import charts, state
from dashboard.widgets import download_bundles, photo_input, pick_runs, run_label, show_error

st.set_page_config(page_title="Classify · Transfer Learning Studio", page_icon="🔍", layout="wide")
st.title("Classify")

runs = pick_runs("Models", "No trained model yet. Train one on the Train page first.", trained_only=True)
name, data, picture = photo_input()

picture_col, results_col = st.columns([1, 2])
picture_col.image(picture, caption="{} ({}×{})".format(name, *picture.info["original_size"]), width="stretch")

if not runs:
    results_col.info("Choose at least one model above.")
for column, run in zip(results_col.columns(max(len(runs), 1)), runs):
    with column:
        try:
            prediction = state.predictor(run).predict(picture)
        except StudioError as exc:
            show_error(exc)
            continue
        st.metric(f"{run.scenario} · {run.backbone}", prediction.top_class, f"{prediction.top_probability:.1%}",
                  delta_color="off", delta_arrow="off", delta_description="probability", border=True)
        st.plotly_chart(charts.probabilities(prediction, run.scenario), key=f"probabilities-{run.id}")
        st.image(state.heat_map(run, data), width="stretch",
                 caption=f"Grad-CAM: where {run.scenario} saw '{prediction.top_class}'")
        st.caption(run_label(run))
        download_bundles(run, key="classify")
