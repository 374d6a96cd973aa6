#!/usr/bin/env bash
# The fabric beside the job queues a user would pick instead, in one sitting on this
# machine (see ../shared/peers/README.md, or PEERS=DIR): for a burst of TASKS no-op/echo
# jobs, RUNS times each,
#   - graphile-worker on the local PostgreSQL: enqueue and drain jobs/s, and end to end
#     (N / (N/enqueue + N/drain), as its enqueue and drain do not overlap);
#   - the fabric on the same PostgreSQL, one node: end to end tasks/s
#     (scripts/cluster-bench.sh: submit in batches of 1,000 over HTTP and drain);
#   - BullMQ on Redis with AOF everysec: enqueue and drain jobs/s, and end to end;
#   - the fabric embedded (SQLite): end to end tasks/s (`fabric load --embedded`).
# Prints every run, then the medians.
#
#   scripts/peer-bench.sh [TASKS=20000] [RUNS=5]
#
# Needs `cargo build --release -p fabric-cli`, Node.js with npm (the peers install their
# packages on first run), PostgreSQL at FABRIC_TEST_POSTGRES (default
# postgres://postgres@127.0.0.1:5432/test) and redis-server.
set -euo pipefail
shopt -s lastpipe  # `bench | peer NAME` notes its figures in this shell
cd "$(dirname "$0")/.."

tasks="${1:-20000}"
runs="${2:-5}"
peers="${PEERS:-$(cd .. && pwd)/shared/peers}"
fabric=target/release/fabric
[ -x "$fabric" ] || { echo "build first: cargo build --release -p fabric-cli" >&2; exit 2; }
[ -d "$peers/graphile" ] || { echo "no peers at $peers (set PEERS)" >&2; exit 2; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
end_to_end() { python3 -c "import sys; n=$1; e=float(sys.argv[1]); d=float(sys.argv[2]); print(round(n/(n/e+n/d)))" "$2" "$3"; }
rate_of() { sed -n "s/.*$1: *\([0-9.]*\).*/\1/p" | head -1 | cut -d. -f1; }

declare -A figures
note() { figures[$1]+="$2 "; echo "$1 run: $2"; }
# A peer's run: its bench script's output, then enqueue, drain and end to end noted.
peer() {
    local name=$1 out enq drain
    out="$(cat)"
    enq="$(printf '%s\n' "$out" | rate_of "$name enqueue")"
    drain="$(printf '%s\n' "$out" | rate_of "$name drain")"
    note "${name}_enqueue" "$enq"
    note "${name}_drain" "$drain"
    note "${name}_end_to_end" "$(end_to_end "$tasks" "$enq" "$drain")"
}

for run in $(seq 1 "$runs"); do
    bash "$peers/graphile/bench.sh" "$tasks" | peer graphile

    out="$(scripts/cluster-bench.sh "$tasks" 1 1)"
    note fabric_postgres_1_node "$(printf '%s\n' "$out" | sed -n 's/.*throughput=\([0-9]*\).*/\1/p' | head -1)"

    REDIS_DURABLE=1 bash "$peers/bullmq/bench.sh" "$tasks" | peer bullmq

    out="$("$fabric" load --embedded --tasks "$tasks" --batch 1000 --concurrency 4 --json)"
    note fabric_embedded "$(printf '%s' "$out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughput_per_second"]))')"
done

echo
echo "medians of $runs runs, $tasks tasks each (jobs/s or tasks/s):"
for key in graphile_enqueue graphile_drain graphile_end_to_end fabric_postgres_1_node \
           bullmq_enqueue bullmq_drain bullmq_end_to_end fabric_embedded; do
    printf '%-24s %8s   (%s)\n' "$key" "$(printf '%s\n' ${figures[$key]} | median)" "${figures[$key]% }"
done
