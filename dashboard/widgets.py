"""Widgets that more than one page uses."""
from __future__ import annotations

import streamlit as st

from core.runs import RunRecord
from dashboard import cache


def pick_runs(label: str, none_yet: str) -> list[RunRecord]:
    """Saved runs to show, the latest finetune and frozen ones chosen by default; stops the page if none exist."""
    listing = cache.runs()
    for damaged in listing.damaged:
        st.warning(f"Skipped a damaged run folder: {damaged.reason}")
    if not listing.runs:
        st.info(none_yet)
        st.stop()
    by_id = {run.id: run for run in listing.runs}
    chosen = st.multiselect(label, list(by_id), default=[r.id for r in cache.default_runs(listing)],
                            format_func=lambda run_id: cache.run_label(by_id[run_id]), key="runs")
    return [by_id[run_id] for run_id in chosen]


def download_bundles(run: RunRecord, key: str) -> None:
    """ONNX and TorchScript download buttons; the bundle is made when the button is pressed."""
    for column, (fmt, title) in zip(st.columns(2), (("onnx", "ONNX"), ("torchscript", "TorchScript"))):
        column.download_button(
            f"{title} bundle", data=lambda fmt=fmt: cache.bundle(run.id, str(run.path), fmt),
            file_name=f"{run.id}-{fmt}.zip", mime="application/zip", key=f"{key}-{fmt}-{run.id}",
            help="The model, its classes and preprocessing, and a model card, in one zip.", on_click="ignore")
