#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the test suite. Extra arguments go to pytest.
source "$(dirname "$0")/scripts/setup_env.sh"
# The browser tests drive Debian's Chromium; install it when we can (root with apt-get).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Chromium for the browser tests ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
  else
    echo "Chromium is not installed: the browser tests will be skipped (sudo apt-get install chromium)." >&2
  fi
fi
# Two workers (pytest-xdist), each with one thread, a test file to each, the longest files first (tests/conftest.py):
# `-n 0` after this runs them in one process.
exec python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
