#!/usr/bin/env bash
# Sets everything up on a fresh machine, then opens the dashboard. Extra arguments go to streamlit.
source "$(dirname "$0")/scripts/setup_env.sh"
exec python -m streamlit run streamlit_app.py "$@"
