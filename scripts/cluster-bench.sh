#!/usr/bin/env bash
# Cluster throughput: N fabric nodes (1, 2, 3 by default) on one PostgreSQL schema, driven
# through the first node's HTTP API by `fabric load --read-back` (batches of 1,000 echo
# tasks), RUNS times each; prints one line per run and the median per node count.
#
#   scripts/cluster-bench.sh [TASKS] [RUNS] [NODE_COUNTS...]
#
# FABRIC_TEST_POSTGRES names the database (default postgres://postgres@127.0.0.1:5432/test);
# each run uses a fresh schema that is dropped afterwards. Needs `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

tasks="${1:-20000}"
runs="${2:-3}"
shift 2 || true
counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(1 2 3)
db="${FABRIC_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
fabric=target/release/fabric
workers="${WORKERS:-64}"
work="$(mktemp -d)"
pids=()
stop_nodes() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_nodes; rm -rf "$work"' EXIT

for n in "${counts[@]}"; do
    results=()
    for run in $(seq 1 "$runs"); do
        schema="fabric_bench_$(date +%s)_$$_${n}_${run}"
        for i in $(seq 1 "$n"); do
            port=$((17170 + i))
            "$fabric" serve --listen "127.0.0.1:$port" --data-dir "$work/node$i" \
                --store "$db" --postgres-schema "$schema" --node "bench-$i" \
                --workers "$workers" >"$work/node$i.log" 2>&1 &
            pids+=($!)
        done
        for i in $(seq 1 "$n"); do
            until curl -fs "http://127.0.0.1:$((17170 + i))/readyz" >/dev/null; do sleep 0.1; done
        done
        out="$("$fabric" load --server http://127.0.0.1:17171 --load-agents --tasks "$tasks" \
            --batch 1000 --concurrency 4 --read-back --json)"
        rate="$(printf '%s' "$out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughput_per_second"]))')"
        echo "nodes=$n run=$run tasks=$tasks throughput=${rate}/s"
        results+=("$rate")
        stop_nodes
        PGOPTIONS="-c client_min_messages=warning" psql "$db" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null
    done
    median="$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    echo "nodes=$n median=${median}/s over $runs runs"
done
