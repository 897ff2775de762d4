"""Streamlit-side code the pages share: settings (settings.py), cached and per-session state (state.py),
Plotly figures (charts.py) and widgets.
The work is in core."""
