"""Streamlit-side code the pages share: cached state (state.py), Plotly figures (charts.py) and widgets.
The work is in core."""
