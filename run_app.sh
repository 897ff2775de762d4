#!/usr/bin/env bash
# Sets everything up on a fresh machine, then opens the dashboard. Extra arguments go to streamlit and win over
# .streamlit/config.toml, which listens on 127.0.0.1 only: ./run_app.sh --server.address 0.0.0.0 shares it on
# purpose (with STUDIO_SHARED=1 for several people; see the README).
source "$(dirname "$0")/scripts/setup_env.sh"
exec python -m scripts.serve "$@"  # streamlit run streamlit_app.py "$@", stopping cleanly on SIGHUP too
