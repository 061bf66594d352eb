#!/usr/bin/env bash
# Runs the README's five-minute tour, its Services, Replicated queues and Security sections
# and the Operations section's metrics end to end, and fails on any unexpected output.
#
# It starts `defibus standalone` on ephemeral ports with a temporary data directory (so it
# runs beside anything else, in CI too), points every command at it through
# DEFIBUS_NAMESERVER, DEFIBUS_GSL and DEFIBUS_SGS, and runs each tour command exactly as
# README.md writes it, with `cargo run --release --` replaced by the binary. Every command
# line below must appear verbatim in README.md: a tour edit that is not mirrored here fails
# this script.
#
# Usage: scripts/tour.sh            (builds target/release/defibus first)
#        DEFIBUS=path/to/defibus scripts/tour.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readme="$root/README.md"
if [[ -z ${DEFIBUS:-} ]]; then
    cargo build --release --locked -p defibus --manifest-path "$root/Cargo.toml" -q
    DEFIBUS="$root/target/release/defibus"
fi
export DEFIBUS
command -v curl >/dev/null 2>&1 || { echo "tour.sh: the Operations section needs curl" >&2; exit 1; }

work=$(mktemp -d)
standalone_pid=
broker_metrics=
broker_pids=()
responder_pid=
responder_line=
cleanup() {
    # Stop what is still running (after a failure) before its data directory goes.
    for pid in $responder_pid "${broker_pids[@]}" $standalone_pid; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "tour.sh: FAIL: $*" >&2
    exit 1
}

# Lines of $2 must match the glob patterns of $1, line for line.
match_lines() {
    local -a want got
    mapfile -t want <<<"$1"
    mapfile -t got <<<"$2"
    ((${#want[@]} == ${#got[@]})) || return 1
    local i
    for i in "${!want[@]}"; do
        # shellcheck disable=SC2053 # the expected line is a glob pattern
        [[ ${got[$i]} == ${want[$i]} ]] || return 1
    done
}

# start_responder 'README command line ending in &': checks README.md has it and runs it in
# the background as written. The line's words are split on spaces: it has no quoted argument.
start_responder() {
    responder_line=$1
    grep -qxF -- "$responder_line" "$readme" || fail "not in README.md: $responder_line"
    [[ $responder_line != *[\"\']* ]] || fail "start_responder cannot split quotes: $responder_line"
    echo "\$ $responder_line"
    local -a args
    read -ra args <<<"${responder_line#cargo run --release -- }"
    unset 'args[-1]' # the '&'
    "$DEFIBUS" "${args[@]}" >"$work/respond.out" 2>"$work/respond.err" &
    responder_pid=$!
}

# stop_responder 'expected stdout globs': the README's `kill %1; wait`. The responder must
# exit 0, write nothing on stderr and print the expected lines.
stop_responder() {
    grep -qxF 'kill %1; wait' "$readme" || fail "README.md lost 'kill %1; wait'"
    echo '$ kill %1; wait'
    kill -TERM "$responder_pid"
    local code=0
    wait "$responder_pid" || code=$?
    responder_pid=
    cat "$work/respond.out"
    [[ $code == 0 ]] || fail "respond exited with $code: $(cat "$work/respond.err")"
    [[ ! -s $work/respond.err ]] || fail "unexpected stderr of respond: $(cat "$work/respond.err")"
    match_lines "$1" "$(cat "$work/respond.out")" ||
        fail "unexpected stdout of $responder_line"
}

# step EXIT_CODE 'README command line' [expected stderr glob] <<<'expected stdout globs'
# Runs the command as README.md writes it; checks its exit code, its stdout line by line,
# and that stderr is empty (or matches the given glob).
step() {
    local code=$1 line=$2 want_err=${3:-} want_out
    want_out=$(cat)
    grep -qxF -- "$line" "$readme" || fail "not in README.md: $line"
    echo "\$ $line"
    local command=${line//cargo run --release --/\"\$DEFIBUS\"}
    # The README scrapes the default metrics address; this bus's broker serves on a free port.
    if [[ -n ${broker_metrics:-} ]]; then
        command=${command//http:\/\/127.0.0.1:9110\/metrics/$broker_metrics}
    fi
    local got=0
    eval "$command" >"$work/out" 2>"$work/err" || got=$?
    cat "$work/out"
    [[ $got == "$code" ]] || fail "exit code $got, expected $code: $line$(printf '\n')$(cat "$work/err")"
    match_lines "$want_out" "$(cat "$work/out")" ||
        fail "unexpected stdout of: $line$(printf '\nexpected:\n')$want_out"
    if [[ -z $want_err ]]; then
        [[ ! -s $work/err ]] || fail "unexpected stderr of: $line$(printf '\n')$(cat "$work/err")"
    else
        # shellcheck disable=SC2053
        [[ $(cat "$work/err") == $want_err ]] ||
            fail "unexpected stderr of: $line$(printf '\n')$(cat "$work/err")"
    fi
}

# Terminal 1: the bus.
grep -qxF 'cargo run --release -- standalone' "$readme" || fail "README.md lost the run command"
"$DEFIBUS" standalone --data-dir "$work/data" --nameserver-addr 127.0.0.1:0 --port-base 0 --proxy-addr 127.0.0.1:0 \
    --gsl-addr 127.0.0.1:0 --sgs-addr 127.0.0.1:0 --metrics-port-base 0 \
    >"$work/standalone.out" 2>"$work/standalone.err" &
standalone_pid=$!
for _ in $(seq 100); do
    grep -q '^Stop with Ctrl-C' "$work/standalone.out" && break
    kill -0 "$standalone_pid" 2>/dev/null || fail "standalone exited: $(cat "$work/standalone.err")"
    sleep 0.1
done
DEFIBUS_NAMESERVER=$(awk '$1 == "nameserver" { print $2 }' "$work/standalone.out")
[[ -n $DEFIBUS_NAMESERVER ]] || fail "standalone printed no nameserver address"
DEFIBUS_GSL=$(awk '$1 == "gsl" { print $2 }' "$work/standalone.out")
DEFIBUS_SGS=$(awk '$1 == "sgs" { print $2 }' "$work/standalone.out")
[[ -n $DEFIBUS_GSL && -n $DEFIBUS_SGS ]] || fail "standalone printed no GSL or SGS address"
export DEFIBUS_NAMESERVER DEFIBUS_GSL DEFIBUS_SGS
broker_metrics=$(awk '$1 == "metrics" && $2 == "broker-a" { print $3 }' "$work/standalone.out")
[[ $broker_metrics == http://127.0.0.1:*/metrics ]] || fail "standalone printed no broker metrics address"
for part in nameserver gsl sgs proxy; do
    grep -qE "^  metrics     $part +http://127\.0\.0\.1:[0-9]+/metrics\$" "$work/standalone.out" ||
        fail "standalone printed no metrics address for $part"
done
# The broker registers with the nameserver just after it starts listening.
for _ in $(seq 100); do
    "$DEFIBUS" admin topic list >/dev/null 2>&1 && break
    sleep 0.1
done

# Terminal 2: the tour.
step 0 'cargo run --release -- admin topic create --topic A10-20190001 --queues 4' <<'EOF'
created A10-20190001 on broker-a: 4 queues, flush async, max depth 500
A10-20190001 is routable (* ms)
EOF
step 0 'cargo run --release -- admin topic list' <<'EOF'
BROKER    TOPIC         QUEUES  READ/WRITE  FLUSH  MAX_DEPTH  DEPTHS
broker-a  A10-20190001  4       4/4         async  500        0,0,0,0
EOF
step 0 'cargo run --release -- produce --topic A10-20190001 "hello, bus"' <<'EOF'
queue=0 offset=0 broker=broker-a
EOF
step 0 "printf 'one\ntwo\nthree\n' | cargo run --release -- produce --topic A10-20190001 --key order-42 --tag gray" <<'EOF'
queue=0 offset=1 broker=broker-a
queue=0 offset=2 broker=broker-a
queue=0 offset=3 broker=broker-a
EOF
step 0 'cargo run --release -- consume --topic A10-20190001 --group G1 --count 4' <<'EOF'
queue=0 offset=0 key=- tag=- value=hello, bus
queue=0 offset=1 key=order-42 tag=gray value=one
queue=0 offset=2 key=order-42 tag=gray value=two
queue=0 offset=3 key=order-42 tag=gray value=three
EOF
step 0 'cargo run --release -- consume --topic A10-20190001 --group G1 --timeout-ms 1000' <<'EOF'
EOF
step 0 'cargo run --release -- admin topic stats --topic A10-20190001' <<'EOF'
BROKER    TOPIC         QUEUE  START  NEXT  DATA  EXPIRED_REQUESTS  GROUP  DELIVERED  COMMITTED  LAG
broker-a  A10-20190001  0      0      4     ok    0                 -      -          -          -
broker-a  A10-20190001  1      0      0     ok    0                 -      -          -          -
broker-a  A10-20190001  2      0      0     ok    0                 -      -          -          -
broker-a  A10-20190001  3      0      0     ok    0                 -      -          -          -
EOF
# Operations > Console: the page and its JSON, from the proxy standalone started (the README
# names the default address, 127.0.0.1:8080; the tour's proxy is on an ephemeral port).
proxy_url=$(awk '$1 == "proxy" { print $2 }' "$work/standalone.out")
console_url=$(awk '$1 == "console" { print $2 }' "$work/standalone.out")
[[ $console_url == "$proxy_url/console" ]] || fail "standalone printed no console line: $(cat "$work/standalone.out")"
console_line='curl -s http://127.0.0.1:8080/v1/topics?topic=A10-20190001 | head -c 200; echo'
grep -qxF -- "$console_line" "$readme" || fail "not in README.md: $console_line"
echo "\$ $console_line"
got=$(eval "${console_line//http:\/\/127.0.0.1:8080/$proxy_url}")
echo "$got"
# shellcheck disable=SC2053
[[ $got == '{"read_at_ms":'*',"topics":[{"topic":"A10-20190001","flush":"async","max_queue_depth":500,"replicas":1,"depth":'* ]] ||
    fail "unexpected /v1/topics answer: $got"
page=$(curl -s -D "$work/console.headers" "$console_url")
[[ $page == *'<title>DeFiBus console</title>'* ]] || fail "GET /console is not the console page"
grep -qi "^content-security-policy: default-src 'none'" "$work/console.headers" ||
    fail "GET /console has no strict Content-Security-Policy: $(cat "$work/console.headers")"

step 0 'cargo run --release -- admin topic create --topic A10-20190002 --queues 2 --flush sync' <<'EOF'
created A10-20190002 on broker-a: 2 queues, flush sync, max depth 500
A10-20190002 is routable (* ms)
EOF

start_responder 'cargo run --release -- respond --topic A10-20190002 --group upper-svc --upper &'
step 0 'cargo run --release -- request --topic A10-20190002 "hello, service"' <<'EOF'
HELLO, SERVICE
EOF
stop_responder "responding to A10-20190002 as group upper-svc; stop with Ctrl-C
queue=0 offset=0 key=- tag=- value=hello, service -> HELLO, SERVICE"

step 0 'cargo run --release -- request --topic A10-20190002 --timeout-ms 1000 "anyone there?"; echo "exit code $?"' \
    '*ERROR defibus] no reply from A10-20190002 (is a responder running?*): timed out after 1s' <<'EOF'
exit code 2
EOF
step 0 'cargo run --release -- admin topic create --topic A10-20190002 --queues 2; echo "exit code $?"' \
    '*ERROR defibus] A10-20190002 already exists on broker-a with other settings: flush sync (asked async); change them with `defibus admin topic update --topic A10-20190002 ...`' <<'EOF'
exit code 1
EOF

# Services: apply, deploy, and call by service id.
step 0 'cargo run --release -- sgs service apply --id 20190003 --name greeter --owner team-a --areas A10 --queues 2' <<'EOF'
SERVICE   STATE    AREAS  QUEUES  DEPTH  FLUSH  NAME     OWNER
20190003  applied  A10    2       500    async  greeter  team-a
EOF
step 0 'cargo run --release -- sgs service deploy --id 20190003' <<'EOF'
SERVICE   STATE     AREAS  QUEUES  DEPTH  FLUSH  NAME     OWNER
20190003  deployed  A10    2       500    async  greeter  team-a
EOF
start_responder 'cargo run --release -- respond --service 20190003 --group greeter --upper &'
step 0 'cargo run --release -- request --service 20190003 "hello, service id"' <<'EOF'
HELLO, SERVICE ID
EOF
step 0 'cargo run --release -- produce --service 20190003 "an event"' <<'EOF'
topic=A10-20190003 queue=0 offset=1 broker=broker-a
EOF
stop_responder "responding to A10-20190003 as group greeter; stop with Ctrl-C
queue=0 offset=0 key=- tag=- value=hello, service id -> HELLO, SERVICE ID"
step 0 'cargo run --release -- request --service 20190009 "anyone there?"; echo "exit code $?"' \
    '*ERROR defibus] request to service 20190009 failed: service 20190009 is not deployed in any area' <<'EOF'
exit code 1
EOF

# Operations: trace a message and a request.
step 0 'cargo run --release -- admin topic create --topic A10-20190008 --queues 1' <<'EOF'
created A10-20190008 on broker-a: 1 queues, flush async, max depth 500
A10-20190008 is routable (* ms)
EOF
step 0 'cargo run --release -- produce --topic A10-20190008 --key order-8 --traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 "order 8"' <<'EOF'
queue=0 offset=0 broker=broker-a traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
EOF
step 0 'cargo run --release -- consume --topic A10-20190008 --group billing --count 1' <<'EOF'
queue=0 offset=0 key=order-8 tag=- traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 value=order 8
EOF
step 0 'cargo run --release -- trace --topic A10-20190008 --queue 0 --offset 0' <<'EOF'
A10-20190008 queue 0 offset 0 on broker-a shard *
  stored       20*Z  in the batch at offset 0 (1 record)
  created      * ms  event  key=order-8  7 bytes
  traceparent  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
  group billing
    pushed     +* to *#A10 (offsets 0..1)
    committed  +* (committed offset now 1)
EOF
start_responder 'cargo run --release -- respond --topic A10-20190008 --group orders-svc --upper &'
step 0 'cargo run --release -- request --topic A10-20190008 --key order-9 --new-trace "check order 9"' <<'EOF'
CHECK ORDER 9
EOF
stop_responder "responding to A10-20190008 as group orders-svc; stop with Ctrl-C
queue=0 offset=1 key=order-9 tag=- traceparent=00-*-01 value=check order 9 -> CHECK ORDER 9"
# The request's own traceparent, made by --new-trace, as its responder printed it.
traceparent=$(sed -n 's/.* traceparent=\([^ ]*\) .*/\1/p' "$work/respond.out")
[[ -n $traceparent ]] || fail "the responder printed no traceparent"
step 0 'cargo run --release -- trace --topic A10-20190008 --key order-9' <<EOF
A10-20190008 queue 0 offset 1 on broker-a shard *
  stored       20*Z  in the batch at offset 1 (1 record)
  created      * ms  request  key=order-9  13 bytes
  traceparent  $traceparent
  group billing
    pushed     not yet
    committed  no (committed offset now 1)
  group orders-svc
    pushed     +* to *#A10 (offsets *..2)
    committed  +* (committed offset now 2)
  request      deadline +* (20*Z), reply to *#A10
    reply      stored +* in the reply queue of shard * at offset *, traceparent $traceparent
EOF

# Replicated queues: three brokers beside the bus (the README's loop, with this run's
# nameserver and data directory), a leader killed with kill -9, a manual election.
brokers_line='for i in 0 1 2; do cargo run --release -- broker --broker-id broker-$i --listen 127.0.0.1 --port-base 0 --shards 1 --data-dir ./defibus-data/broker-$i --nameserver 127.0.0.1:9876 --metrics-address 127.0.0.1:912$i & done'
grep -qxF -- "$brokers_line" "$readme" || fail "not in README.md: $brokers_line"
echo "\$ $brokers_line"
for i in 0 1 2; do
    "$DEFIBUS" broker --broker-id "broker-$i" --listen 127.0.0.1 --port-base 0 --shards 1 \
        --data-dir "$work/data/broker-$i" --nameserver "$DEFIBUS_NAMESERVER" --metrics-address 127.0.0.1:0 \
        >"$work/broker-$i.out" 2>"$work/broker-$i.err" &
    broker_pids+=($!)
done
for _ in $(seq 100); do
    (($("$DEFIBUS" admin broker list 2>/dev/null | grep -c '^broker-[012] ') == 3)) && break
    sleep 0.1
done
step 0 'cargo run --release -- admin topic create --topic A10-20190005 --queues 1 --replicas 3 --acks all --flush sync' <<'EOF'
created A10-20190005 with 1 queues, 3 replicas on broker-0, broker-1, broker-2 (acks=all); leaders: 0→broker-0
A10-20190005 is routable (* ms)
EOF
step 0 "printf 'pay 1\npay 2\npay 3\n' | cargo run --release -- produce --topic A10-20190005" <<'EOF'
queue=0 offset=0 broker=broker-0
queue=0 offset=1 broker=broker-0
queue=0 offset=2 broker=broker-0
EOF
step 0 'cargo run --release -- admin topic describe --topic A10-20190005' <<'EOF'
QUEUE  EPOCH  LEADER    IN SYNC                     COMMITTED / END  FOLLOWER LAG
0      1      broker-0  broker-0,broker-1,broker-2  3 / 3            broker-1:0 broker-2:0
EOF
grep -qxF 'kill -9 %1' "$readme" || fail "README.md lost 'kill -9 %1'"
echo '$ kill -9 %1'
kill -9 "${broker_pids[0]}"
wait "${broker_pids[0]}" 2>/dev/null || true
step 0 'cargo run --release -- admin queue elect --topic A10-20190005 --queue 0' \
    'broker-0 does not answer (*): left out' <<'EOF'
queue 0 of A10-20190005: broker-2 leads in epoch 2 from offset 3; in sync: broker-1, broker-2
routed to broker-2 (* ms)
EOF
step 0 "printf 'pay 4\n' | cargo run --release -- produce --topic A10-20190005" <<'EOF'
queue=0 offset=3 broker=broker-2
EOF
step 0 'cargo run --release -- consume --topic A10-20190005 --group audit --count 4' <<'EOF'
queue=0 offset=0 key=- tag=- value=pay 1
queue=0 offset=1 key=- tag=- value=pay 2
queue=0 offset=2 key=- tag=- value=pay 3
queue=0 offset=3 key=- tag=- value=pay 4
EOF
for pid in "${broker_pids[@]:1}"; do
    kill -TERM "$pid"
    wait "$pid" || fail "a replica broker did not stop cleanly"
done
broker_pids=()

# Operations: the broker's metrics after all of the above (the README's Metrics section).
step 0 "curl -s http://127.0.0.1:9110/metrics | grep '^defibus_queue_in_records_total{topic=\"A10-20190001\"' | sort" <<'EOF'
defibus_queue_in_records_total{topic="A10-20190001",queue="0"} 4
defibus_queue_in_records_total{topic="A10-20190001",queue="1"} 0
defibus_queue_in_records_total{topic="A10-20190001",queue="2"} 0
defibus_queue_in_records_total{topic="A10-20190001",queue="3"} 0
EOF
# The unanswered request's timeout is counted by a sweep within a second of its deadline.
for _ in $(seq 100); do
    curl -s "$broker_metrics" | grep -qxF 'defibus_request_timeouts_total{topic="A10-20190002"} 1' && break
    sleep 0.1
done
step 0 "curl -s http://127.0.0.1:9110/metrics | grep -E '^defibus_request_(reply_seconds_count|timeouts_total)\{topic=\"A10-2019000[23]\"' | sort" <<'EOF'
defibus_request_reply_seconds_count{topic="A10-20190002"} 1
defibus_request_reply_seconds_count{topic="A10-20190003"} 1
defibus_request_timeouts_total{topic="A10-20190002"} 1
defibus_request_timeouts_total{topic="A10-20190003"} 0
EOF
broker_metrics=

# Terminal 1 again: Ctrl-C stops the bus cleanly.
kill -INT "$standalone_pid"
code=0
wait "$standalone_pid" || code=$?
standalone_pid=
[[ $code == 0 ]] || fail "standalone exited with $code: $(cat "$work/standalone.err")"
if grep -E ' (WARN|ERROR) ' "$work/standalone.err" | grep -v 'RLIMIT_MEMLOCK'; then
    fail "the bus logged warnings or errors during the tour"
fi

# Security: the same data directory, secured. Files the README writes to ./ go to $work.
cd "$work"
step 0 'cargo run --release -- security init --out ./secrets' <<'EOF'
policy: ./secrets/policy.json
token of admin: ./secrets/admin.token
token of broker: ./secrets/broker.token
token of nameserver: ./secrets/nameserver.token
token of sgs: ./secrets/sgs.token
token of gsl: ./secrets/gsl.token
token of proxy: ./secrets/proxy.token
token of app: ./secrets/app.token

nameserver.toml:*
broker.toml:*
clients:*
EOF
step 0 'cargo run --release -- certs dev --out ./secrets' <<'EOF'
wrote to ./secrets (valid 365 days):
  CA          ./secrets/ca.pem (key ./secrets/ca.key)
  server      ./secrets/server.pem (key ./secrets/server.key) for localhost, 127.0.0.1, ::1
  admin       ./secrets/admin.pem (key ./secrets/admin.key)
  broker      ./secrets/broker.pem (key ./secrets/broker.key)
  nameserver  ./secrets/nameserver.pem (key ./secrets/nameserver.key)
  sgs         ./secrets/sgs.pem (key ./secrets/sgs.key)
  gsl         ./secrets/gsl.pem (key ./secrets/gsl.key)
  proxy       ./secrets/proxy.pem (key ./secrets/proxy.key)
  app         ./secrets/app.pem (key ./secrets/app.key)

broker.toml:
  \[tls\]
  cert = "./secrets/server.pem"
  key = "./secrets/server.key"
  ca = "./secrets/ca.pem"
  client_auth = "required"
  client_cert = "./secrets/broker.pem"
  client_key = "./secrets/broker.key"

or: defibus broker --tls-cert ./secrets/server.pem --tls-key ./secrets/server.key --tls-ca ./secrets/ca.pem
a whole bus on TLS: defibus standalone --tls ./secrets

the defibus CLI: --tls-ca ./secrets/ca.pem (or DEFIBUS_TLS_CA); as "app" by certificate: --tls-cert ./secrets/app.pem --tls-key ./secrets/app.key
a Rust client as "app": ClientConfig::with_tls(TlsSettings { cert: "./secrets/app.pem", key: "./secrets/app.key", ca: "./secrets/ca.pem", .. })
EOF
grep -qxF 'cargo run --release -- standalone --brokers 2 --security ./secrets --tls ./secrets' "$readme" ||
    fail "README.md lost the secured run command"
"$DEFIBUS" standalone --brokers 2 --security ./secrets --tls ./secrets --data-dir "$work/data" --nameserver-addr 127.0.0.1:0 \
    --port-base 0 --proxy-addr 127.0.0.1:0 --gsl-addr 127.0.0.1:0 --sgs-addr 127.0.0.1:0 \
    >"$work/secured.out" 2>"$work/secured.err" &
standalone_pid=$!
for _ in $(seq 100); do
    grep -q '^Stop with Ctrl-C' "$work/secured.out" && break
    kill -0 "$standalone_pid" 2>/dev/null || fail "secured standalone exited: $(cat "$work/secured.err")"
    sleep 0.1
done
DEFIBUS_NAMESERVER=$(awk '$1 == "nameserver" { print $2 }' "$work/secured.out")
[[ -n $DEFIBUS_NAMESERVER ]] || fail "the secured standalone printed no nameserver address"
for _ in $(seq 100); do
    [[ $("$DEFIBUS" admin broker list --token-file ./secrets/admin.token --tls-ca ./secrets/ca.pem \
        2>/dev/null | grep -c '^broker-[ab] ') == 2 ]] && break
    sleep 0.1
done
step 0 'cargo run --release -- admin topic list --token-file ./secrets/admin.token; echo "exit code $?"' \
    "*ERROR defibus] asking the nameservers for the brokers: $DEFIBUS_NAMESERVER: protocol violation: the server answered with a TLS alert, so it speaks TLS: configure the client with TLS (ClientConfig::with_tls; the defibus CLI: --tls-ca FILE or DEFIBUS_TLS_CA)" <<'EOF'
exit code 1
EOF
step 0 'export DEFIBUS_TLS_CA=./secrets/ca.pem' <<'EOF'
EOF
step 0 'cargo run --release -- admin topic list; echo "exit code $?"' \
    '*ERROR defibus] asking the nameservers for the brokers: not authenticated: the nameserver requires authentication: no token was presented (give one with --token-file or DEFIBUS_TOKEN_FILE)' <<'EOF'
exit code 1
EOF
step 0 'export DEFIBUS_TOKEN_FILE=./secrets/app.token' <<'EOF'
EOF
step 0 'cargo run --release -- admin topic create --topic A10-20190007 --queues 1; echo "exit code $?"' \
    '*ERROR defibus] creating A10-20190007 on broker-a: permission denied: principal "app" may not admin_topic on topic "A10-20190007": no grant allows it (defibus admin acl grant app admin_topic A10-20190007)' <<'EOF'
exit code 1
EOF
step 0 'cargo run --release -- admin topic create --topic A10-20190007 --queues 1 --token-file ./secrets/admin.token' <<'EOF'
created A10-20190007 on broker-a: 1 queues, flush async, max depth 500
created A10-20190007 on broker-b: 1 queues, flush async, max depth 500
A10-20190007 is routable (* ms)
EOF
step 0 "cargo run --release -- admin acl revoke app produce '*' --token-file ./secrets/admin.token" \
    "$DEFIBUS_NAMESERVER: policy version 2 stored
revoked: app produce [*]
in force on 2 brokers (* ms)" <<'EOF'
EOF
step 0 'cargo run --release -- admin acl grant app produce A10-20190007 --token-file ./secrets/admin.token' \
    "$DEFIBUS_NAMESERVER: policy version 3 stored
granted: app produce A10-20190007
in force on 2 brokers (* ms)" <<'EOF'
EOF
step 0 'cargo run --release -- produce --topic A10-20190007 "payment 1"' <<'EOF'
queue=0 offset=0 broker=broker-[ab]
EOF
step 0 'cargo run --release -- produce --topic A10-20190001 "elsewhere"; echo "exit code $?"' \
    '*ERROR defibus] sending to A10-20190001: permission denied: principal "app" may not produce on topic "A10-20190001": no grant allows it (defibus admin acl grant app produce A10-20190001)' <<'EOF'
exit code 1
EOF
step 0 'cargo run --release -- consume --topic A10-20190007 --group audit --count 1 --tls-cert ./secrets/admin.pem --tls-key ./secrets/admin.key' <<'EOF'
queue=0 offset=0 key=- tag=- value=payment 1
EOF
grep -qF '"detail":"version 3: +grant app produce A10-20190007"' "$work/data/audit.log" ||
    fail "the audit log lacks the grant: $(cat "$work/data/audit.log")"
grep -q '"principal":"app".*"action":"produce","resource":"A10-20190001","outcome":"denied"' \
    "$work/data/audit.log" || fail "the audit log lacks the denial: $(cat "$work/data/audit.log")"
unset DEFIBUS_TOKEN_FILE DEFIBUS_TLS_CA
kill -INT "$standalone_pid"
code=0
wait "$standalone_pid" || code=$?
standalone_pid=
[[ $code == 0 ]] || fail "the secured standalone exited with $code: $(cat "$work/secured.err")"
cd "$root"
echo "tour.sh: the README tour ran as written"
