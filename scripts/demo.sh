#!/usr/bin/env bash
# The job commands below are run by sh -c and expand $LOCK_EXEC_FENCE there, on purpose.
# shellcheck disable=SC2016
# The main job end to end with no AWS account: a local dynalite, the table created by
# lock-exec itself, and two "clusters" firing the same cron job at once.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet
bin=$PWD/target/debug/lock-exec
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
.tools/npm/node_modules/.bin/dynalite --host 127.0.0.1 --port "$port" --createTableMs 0 >/dev/null 2>&1 &
dynalite=$!
trap 'kill $dynalite 2>/dev/null' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done

export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
export LOCK_EXEC_ENDPOINT_URL=http://127.0.0.1:$port LOCK_EXEC_LOG_FORMAT=text

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "lock-exec create-table"
"$bin" create-table

# The Job name the CronJob controller would give this minute's occurrence, in every cluster.
job="nightly-report-$(( $(date +%s) / 60 ))"
export LOCK_EXEC_JOB_NAME=$job

say "cluster east and cluster west fire occurrence $job at the same moment"
"$bin" run nightly-report --cluster east --owner east-pod -- \
  sh -c 'echo "[east] running the report (fence $LOCK_EXEC_FENCE, slot $LOCK_EXEC_SLOT)"; sleep 3; echo "[east] done"' &
east=$!
"$bin" run nightly-report --cluster west --owner west-pod -- \
  sh -c 'echo "[west] running the report (fence $LOCK_EXEC_FENCE, slot $LOCK_EXEC_SLOT)"; sleep 3; echo "[west] done"' &
west=$!
sleep 1

say "lock-exec status nightly-report (while one of them runs)"
"$bin" status nightly-report

set +e
wait $east; east_rc=$?
wait $west; west_rc=$?
set -e
say "exit codes: east=$east_rc west=$west_rc (the skipped one exits --locked-exit-code, default 0)"

say "cluster south's controller fires the same occurrence late, after the run ended"
"$bin" run nightly-report --cluster south --owner south-pod -- \
  sh -c 'echo "[south] running the report AGAIN (this must not happen)"'

say "lock-exec status nightly-report (free, the occurrence done, fence kept)"
"$bin" status nightly-report
