"""Streamlit-side helpers shared by the pages: cached loaders and Plotly figures. The work is in core."""
