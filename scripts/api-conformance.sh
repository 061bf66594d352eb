#!/usr/bin/env bash
# The proxy against its own OpenAPI document: schemathesis generates requests from
# /openapi.json (valid ones must be accepted, invalid ones refused, every answer must match
# the documented status and schema) against a live `defibus standalone` on ephemeral ports.
# /v1/stream is left out: it is a WebSocket handshake, which schemathesis's HTTP client
# cannot complete; the WebSocket API has its own tests (proxy/tests/ws_scenario.rs).
#
# Usage: scripts/api-conformance.sh            (DEFIBUS=... names the binary; else debug build)
#        SCHEMATHESIS_EXAMPLES=200 scripts/api-conformance.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${DEFIBUS:-} ]]; then
    cargo build --locked -p defibus --manifest-path "$root/Cargo.toml" -q
    DEFIBUS="$root/target/debug/defibus"
fi
venv=${PYTHON_VENV:-$root/target/python-venv}
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/proxy/clients/python/requirements-api-test.txt"

work=$(mktemp -d)
pid=
responder=
cleanup() {
    [[ -n $responder ]] && kill -TERM "$responder" 2>/dev/null && wait "$responder" 2>/dev/null
    [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$DEFIBUS" standalone --data-dir "$work/data" --nameserver-addr 127.0.0.1:0 --port-base 0 \
    --proxy-addr 127.0.0.1:0 --gsl-addr 127.0.0.1:0 --sgs-addr 127.0.0.1:0 \
    >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do
    grep -q '^Stop with Ctrl-C' "$work/out" && break
    kill -0 "$pid" 2>/dev/null || { echo "standalone exited: $(cat "$work/err")" >&2; exit 1; }
    sleep 0.1
done
proxy=$(awk '$1 == "proxy" { print $2 }' "$work/out")
[[ -n $proxy ]] || { echo "standalone printed no proxy address" >&2; exit 1; }
# A topic to publish to, so generated requests also reach the bus, not only the validation.
nameserver=$(awk '$1 == "nameserver" { print $2 }' "$work/out")
DEFIBUS_NAMESERVER=$nameserver "$DEFIBUS" admin topic create --topic A10-20190001 --queues 2 >/dev/null
# And a service answering it, so a generated request is replied at once rather than waiting
# out its timeout (up to a minute) with nobody there. Stopped with the bus.
DEFIBUS_NAMESERVER=$nameserver "$DEFIBUS" respond --topic A10-20190001 --group conformance \
    --echo >/dev/null 2>"$work/respond.err" &
responder=$!

# From the scratch directory: schemathesis keeps a cache (.schemathesis/) where it runs.
cd "$work"
"$venv/bin/schemathesis" --config-file "$root/proxy/schemathesis.toml" run "$proxy/openapi.json" \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" --exclude-path /v1/stream
