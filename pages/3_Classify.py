"""Classify: a photo through every chosen model, side by side."""
import streamlit as st

from core.data import RESIZE_SIZE
from core.errors import StudioError
from core.images import open_image
from dashboard import cache, charts
from dashboard.widgets import download_bundles, pick_runs

st.set_page_config(page_title="Classify · Transfer Learning Studio", page_icon="🔍", layout="wide")
st.title("Classify")

runs = pick_runs("Models", "No trained model yet. Train one on the Train page first.")

source = st.radio("Picture", ["Upload a file", "Take a photo"], horizontal=True, label_visibility="collapsed")
if source == "Upload a file":
    upload = st.file_uploader("Photo (JPEG, PNG, WebP, GIF, BMP or TIFF)",
                              type=["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"])
else:
    upload = st.camera_input("Photo")

if upload is None:
    st.caption("Upload a photo or take one to see what each model predicts.")
    st.stop()

data = upload.getvalue()
if len(data) > cache.MAX_PHOTO_MB * 2**20:
    st.error(f"{upload.name} is {len(data) / 2**20:.1f} MB; the limit is {cache.MAX_PHOTO_MB} MB. Use a smaller photo.")
    st.stop()
try:
    picture = open_image(data, upload.name, at_least=RESIZE_SIZE)
except StudioError as exc:
    st.error(str(exc))
    st.stop()

picture_col, results_col = st.columns([1, 2])
picture_col.image(picture, caption="{} ({}×{})".format(upload.name, *picture.info["original_size"]), width="stretch")

if not runs:
    results_col.info("Choose at least one model above.")
for column, run in zip(results_col.columns(max(len(runs), 1)), runs):
    with column:
        try:
            prediction = cache.predictor_for(run).predict(picture)
        except StudioError as exc:
            st.error(str(exc))
            continue
        st.metric(f"{run.scenario} · {run.backbone}", prediction.top_class, f"{prediction.top_probability:.1%}",
                  delta_color="off", delta_arrow="off", delta_description="probability", border=True)
        st.plotly_chart(charts.probabilities(prediction, run.scenario), key=f"probabilities-{run.id}")
        st.image(cache.heat_map(run.id, str(run.path), data), width="stretch",
                 caption=f"Grad-CAM: where {run.scenario} saw '{prediction.top_class}'")
        st.caption(cache.run_label(run))
        download_bundles(run, key="classify")
