#!/usr/bin/env bash
# The Python client's tests against a real bus and proxy: builds `defibus` (debug), makes a
# venv, installs proxy/clients/python/requirements-test.txt and runs pytest.
# Usage: scripts/python-tests.sh [pytest args...]   (DEFIBUS_BIN=... skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [[ -z ${DEFIBUS_BIN:-} ]]; then
    cargo build --locked -p defibus
    export DEFIBUS_BIN="$root/target/debug/defibus"
fi
venv=${PYTHON_VENV:-$root/target/python-venv}
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r proxy/clients/python/requirements-test.txt
cd proxy/clients/python
exec "$venv/bin/python" -m pytest -q "$@"
