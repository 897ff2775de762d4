"""The backbone picker of the Train and Experiments pages: torchvision's whole ImageNet catalogue, searchable by
typing, each with its size, ImageNet accuracy, input and whether its weights are here (core.backbones); the whole
table, sortable and searchable, under it."""
from __future__ import annotations

import streamlit as st

from core.backbones import BACKBONES
from core.models import catalogue_rows


@st.cache_data(ttl=60, show_spinner=False)
def catalogue_table() -> list[dict[str, object]]:
    """The catalogue's rows, weights looked up again at most once a minute (a file copied in shows up)."""
    return catalogue_rows(list(BACKBONES.values()))


def _label(name: str) -> str:
    row = next(row for row in catalogue_table() if row["backbone"] == name)
    title = BACKBONES[name].title
    shown = name if title == name else f"{title} ({name})"
    weights = "weights here" if str(row["weights"]).startswith("here") else "downloads its weights"
    return (f"{shown} · {weights} · {row['params (M)']}M params · top-1 {row['ImageNet top-1']:.1f}% · "
            f"{BACKBONES[name].preprocessing.crop} px")


def backbone_picker(container, default: str, key: str, label: str = "Backbone") -> str:
    """A searchable select box over every backbone; under it, the chosen one's input and weights in words."""
    names = list(BACKBONES)
    chosen = container.selectbox(label, names, index=names.index(default) if default in names else 0,
                                 format_func=_label, key=key, help="Every torchvision ImageNet classifier: type to "
                                 "search. Each is prepared as its own weights expect (resize, crop, interpolation).")
    row = next(row for row in catalogue_table() if row["backbone"] == chosen)
    container.caption(f"Input {row['input']}; {row['GFLOPS']:g} GFLOPS; weights: {row['weights']}.")
    return chosen


def backbones_picker(container, default: str, key: str) -> list[str]:
    """A searchable multiselect over every backbone, to compare several; under it, each one's input and weights."""
    chosen = container.multiselect("Backbones", list(BACKBONES), default=[default] if default in BACKBONES else [],
                                   format_func=_label, key=key, select_all=False, help="Every torchvision ImageNet "
                                   "classifier: type to search, choose several to compare them on your pictures. Each "
                                   "is timed for the estimate and trained, so each is chosen on its own. Each is "
                                   "prepared as its own weights expect (resize, crop, interpolation).")
    rows = {row["backbone"]: row for row in catalogue_table()}
    container.caption(" · ".join(f"{name}: input {rows[name]['input']}, weights {rows[name]['weights']}"
                                 for name in chosen) or "Choose at least one backbone.")
    return chosen


def catalogue_expander() -> None:
    """Every backbone in one table, to sort and search."""
    with st.expander(f"All {len(BACKBONES)} backbones: size, ImageNet accuracy, input, weights"):
        st.dataframe(catalogue_table(), hide_index=True, width="stretch")
