#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the test suite. Extra arguments go to pytest.
source "$(dirname "$0")/scripts/setup_env.sh"
exec python -m pytest "$@"
