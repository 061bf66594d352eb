#!/usr/bin/env bash
# The web console (/console) in a real headless browser: Debian's chromium and
# chromium-driver (.ci/run installs them), driven by Selenium from a venv, against live
# `defibus standalone` buses the tests start themselves (proxy/console-tests/conftest.py).
#
# Usage: scripts/console-tests.sh [pytest args...]    (DEFIBUS=... names the binary; else a
#        debug build)
#        CONSOLE_SCREENSHOTS=docs/img scripts/console-tests.sh    (writes console-*.png)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}
chromedriver=${CHROMEDRIVER:-/usr/bin/chromedriver}
if [[ ! -x $chromium || ! -x $chromedriver ]]; then
    echo "console-tests: SKIPPED: $chromium or $chromedriver is missing" \
        "(apt-get install chromium chromium-driver)" >&2
    exit 0
fi
if [[ -z ${DEFIBUS:-} ]]; then
    cargo build --locked -p defibus --manifest-path "$root/Cargo.toml" -q
    DEFIBUS="${CARGO_TARGET_DIR:-$root/target}/debug/defibus"
fi
export DEFIBUS CHROMIUM=$chromium CHROMEDRIVER=$chromedriver
venv=${PYTHON_VENV:-$root/target/python-venv}
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/proxy/console-tests/requirements.txt"
if [[ -n ${CONSOLE_SCREENSHOTS:-} ]]; then
    CONSOLE_SCREENSHOTS=$(realpath -m "$CONSOLE_SCREENSHOTS")
    export CONSOLE_SCREENSHOTS
fi
cd "$root/proxy/console-tests"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
