#!/usr/bin/env bash
# The sluice demo, end to end on a fresh machine:
#
#   1. installs the wasm32-wasip2 target and builds host, example target
#      and CSV plugin (scripts/setup);
#   2. starts the example target API on 127.0.0.1 with seeded faults (500,
#      503, 429 with Retry-After, stalls past the client timeout, connection
#      resets) and a 4-second outage shortly after the first request;
#   3. ingests examples/data/airports.csv (3,376 rows), which shows retries
#      and the circuit breaker opening during the outage;
#   4. reprocesses the dead letters once the API is back;
#   5. compares the target's database with the file, row by row.
#
# Everything it writes goes to examples/run/ (removed at each start).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

scripts/setup
target="${CARGO_TARGET_DIR:-target}"

run_dir=examples/run
rm -rf "$run_dir"
mkdir -p "$run_dir"

"$target"/release/sluice-target serve \
  --addr 127.0.0.1:0 --db "$run_dir/target.db" --seed 7 \
  --rate-500 0.02 --rate-503 0.02 --rate-429 0.02 --retry-after 1 \
  --rate-stall 0.005 --stall-for 3s --rate-reset 0.01 \
  --outage-after 300ms --outage-for 4s \
  > "$run_dir/target.log" 2>&1 &
target_pid=$!
trap 'kill "$target_pid" 2>/dev/null || true' EXIT

endpoint=""
for _ in $(seq 1 100); do
  endpoint=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$run_dir/target.log" | head -n 1 || true)
  [ -n "$endpoint" ] && break
  sleep 0.1
done
if [ -z "$endpoint" ]; then
  echo "demo: the example target did not start; its log:" >&2
  cat "$run_dir/target.log" >&2
  exit 1
fi
echo
echo "== example target listening on $endpoint (faults on, outage soon)"

# Shared options: the CSV plugin keyed by IATA code, short timeouts and
# backoffs so the demo takes seconds, and a breaker that opens after five
# requests in a row run out of retries.
options=(
  --plugin plugins/csv.wasm
  --endpoint "$endpoint"
  --plugin-config key=iata
  --plugin-config 'path=/airports/{iata}'
  --dead-letter-dir "$run_dir/dead-letters"
  --state-dir "$run_dir/state"
  --timeout 1s
  --initial-backoff 50ms
  --max-backoff 500ms
  --max-retry-after 2s
  --failure-threshold 5
  --open-duration 2s
)

echo
echo "== sluice run: first pass over examples/data/airports.csv"
set +e
"$target"/release/sluice run "${options[@]}" --max-retries 3 examples/data/airports.csv
status=$?
set -e
echo "sluice run exited with $status (0: all delivered, 3: some dead-lettered)"

echo
echo "== dead-letter files"
ls -1 "$run_dir/dead-letters" 2>/dev/null || echo "(none)"

if [ -d "$run_dir/dead-letters" ] && [ -n "$(ls -A "$run_dir/dead-letters")" ]; then
  echo
  echo "== sluice reprocess: sending the dead letters again"
  "$target"/release/sluice reprocess "${options[@]}" --max-retries 8 "$run_dir/dead-letters"
fi

echo
echo "== comparing the target's database with the file"
"$target"/release/sluice-target compare \
  --db "$run_dir/target.db" --file examples/data/airports.csv --path '/airports/{iata}'
echo "demo: the database matches examples/data/airports.csv exactly"
