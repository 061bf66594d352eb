#!/usr/bin/env bash
# The shard-scaling sweep and the before/after pairs of issue 10, for a many-core machine.
#
#   scripts/bench-sweep.sh OUT_DIR BIN_DIR [BIN_DIR ...]
#
# Each BIN_DIR holds a release `defibus-bench` (one per build to compare: before, after). Runs
# alternate between the builds for every case, so a drift of the machine hits both alike. Data
# goes under $DATA_ROOT (default /root/defibus-sweep), never a tmpfs unless you point it there.
# Figures land in OUT_DIR as one JSON file per run (defibus-bench --json) plus the text table,
# and `summary.tsv` gathers the headline figure of each.
#
# Environment: SHARDS (default "1 2 4 8"), SIZES (default "100 1024"), DURATION (default 3s),
# WARMUP (default 1s), RR_REQUESTERS (default "1 16"), CONSUME_MESSAGES (default 2000000).
set -euo pipefail
out=${1:?usage: bench-sweep.sh OUT_DIR BIN_DIR [BIN_DIR ...]}
shift
bins=("$@")
[ ${#bins[@]} -ge 1 ] || { echo "name at least one BIN_DIR" >&2; exit 2; }
shards=${SHARDS:-1 2 4 8}
sizes=${SIZES:-100 1024}
duration=${DURATION:-3s}
warmup=${WARMUP:-1s}
requesters=${RR_REQUESTERS:-1 16}
data_root=${DATA_ROOT:-/root/defibus-sweep}
mkdir -p "$out" "$data_root"
ulimit -l unlimited 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true
summary="$out/summary.tsv"
printf 'case\tbuild\tfigure\tvalue\n' > "$summary"

# run NAME BUILD_INDEX ARGS... : one bench run, its table and JSON kept, headline appended.
run() {
    local name=$1 index=$2
    shift 2
    local bin="${bins[$index]}/defibus-bench" tag="b$index"
    local data="$data_root/$name.$tag"
    rm -rf "$data"
    echo "=== $name [$tag] $*" >&2
    if "$bin" --warmup "$warmup" --data-dir "$data" --json "$out/$name.$tag.json" "$@" \
        > "$out/$name.$tag.txt" 2> "$out/$name.$tag.err"; then
        # "metric ours [baseline ratio]", the metric one word (msg/s) or two (p50 µs).
        grep -E '^\s+(msg/s|MB/s|p50 µs|p99 µs|CPU µs/op|broker µs/op|client µs/op) ' \
            "$out/$name.$tag.txt" | awk -v n="$name" -v t="$tag" '{
                if ($1 == "msg/s" || $1 == "MB/s") { m = $1; v = $2 } else { m = $1 " " $2; v = $3 }
                printf "%s\t%s\t%s\t%s\n", n, t, m, v
            }' >> "$summary"
    else
        printf '%s\t%s\tfailed\t%s\n' "$name" "$tag" "$?" >> "$summary"
    fi
    rm -rf "$data"
}

for size in $sizes; do
    for n in $shards; do
        for i in "${!bins[@]}"; do
            run "produce-${size}B-${n}x${n}" "$i" --shards "$n" --baseline false \
                produce --message-bytes "$size" --producers "$n" --queues $((n * 4)) \
                --duration "$duration"
        done
    done
done
for r in $requesters; do
    for i in "${!bins[@]}"; do
        run "rr-${r}" "$i" rr --requesters "$r" --duration "$duration"
    done
done
for i in "${!bins[@]}"; do
    run "consume-4x4" "$i" --shards 4 --baseline false consume --consumers 4 --queues 16 \
        --messages "${CONSUME_MESSAGES:-2000000}"
    run "produce-1024B-4x4-async" "$i" --shards 4 produce --producers 4 --queues 16 \
        --duration "$duration"
done
echo "--- summary ($summary)" >&2
column -t -s $'\t' "$summary" >&2 || cat "$summary" >&2
