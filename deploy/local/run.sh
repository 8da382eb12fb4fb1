#!/usr/bin/env bash
# The local pod demo, the README's run command. On one machine, on loopback:
# installs what is missing and builds; ingests Fashion-MNIST from the Debian
# package; starts a coordinator, N workers (default 2) and a Prometheus
# server scraping them; submits the reference job (deploy/local/
# reference_job.yaml: MLP 784-1024-1024-10, batch 256, SGD+Nesterov, cosine,
# 5 epochs); shows live progress; audits the committed lineage for
# exactly-once per epoch; queries Prometheus; shuts everything down and ends
# with one machine-readable line:
#
#   RESULT job=<id> state=<...> test_accuracy=<0.xxxx> audit_missing=<n>
#          audit_duplicates=<n> epochs=<e> steps=<s> seconds=<t>
#
#   bash deploy/local/run.sh [--workers N] [--workdir DIR] [--epochs E]
#                            [--bin-dir DIR]
# --bin-dir uses binaries already built (a directory with cli/, coordinator/
# and worker/ below it, e.g. a Bazel runfiles tree) and skips install/build:
# this is how tests/local_demo_test runs it.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

workers=2
work="$repo/.demo"
epochs=""
bin=""
usage="usage: $0 [--workers N] [--workdir DIR] [--epochs E] [--bin-dir DIR]"
while (($# > 0)); do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --bin-dir) bin="$2"; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done

built_here=false
if [[ -z "$bin" ]]; then
  bash deploy/install_deps.sh || exit 1
  bazel build //cli:podtrain //cli:podtrain-data //cli:podtrain-audit \
    //coordinator:podtrain-coordinator //worker:podtrain-worker || exit 1
  bin="$repo/bazel-bin"
  built_here=true
fi

rm -rf "$work" && mkdir -p "$work/logs"
pids=()
cleanup() {
  # Workers first (they exit on their own when the job ends), then the rest.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  $built_here && bazel shutdown >/dev/null 2>&1
  return 0
}
trap cleanup EXIT

wait_for_file() {  # path seconds
  for _ in $(seq $(($2 * 10))); do [[ -s "$1" ]] && return 0; sleep 0.1; done
  echo "run.sh: $1 did not appear" >&2
  return 1
}

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "== ingest Fashion-MNIST"
"$bin/cli/podtrain-data" ingest fashion-mnist --out "$work/data" --shards 8 >"$work/logs/ingest.txt" || exit 1
"$bin/cli/podtrain-data" verify "$work/data/train" || exit 1

echo "== start the coordinator"
"$bin/coordinator/podtrain-coordinator" --address=127.0.0.1:0 \
  --port_file="$work/coordinator.port" --metrics_address=127.0.0.1:0 \
  --metrics_port_file="$work/coordinator.metrics_port" \
  --journal="$work/journal.db" >"$work/logs/coordinator.log" 2>&1 &
pids+=($!)
wait_for_file "$work/coordinator.port" 30 || exit 1
coordinator="127.0.0.1:$(cat "$work/coordinator.port")"
echo "coordinator on $coordinator"

echo "== start $workers workers"
for ((i = 0; i < workers; i++)); do
  "$bin/worker/podtrain-worker" --coordinator="$coordinator" --worker_id="worker-$i" \
    --metrics_address=127.0.0.1:0 --metrics_port_file="$work/worker-$i.metrics_port" \
    >"$work/logs/worker-$i.log" 2>&1 &
  pids+=($!)
done

echo "== start Prometheus (scraping the coordinator and the workers)"
targets="\"127.0.0.1:$(cat "$work/coordinator.metrics_port")\""
for ((i = 0; i < workers; i++)); do
  wait_for_file "$work/worker-$i.metrics_port" 30 || exit 1
  targets="$targets, \"127.0.0.1:$(cat "$work/worker-$i.metrics_port")\""
done
prometheus_port=$(free_port)
sed -e "s|\${TARGETS}|$targets|" deploy/local/prometheus.yml >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null || exit 1
prometheus --config.file="$work/prometheus.yml" --web.listen-address="127.0.0.1:$prometheus_port" \
  --storage.tsdb.path="$work/prometheus" >"$work/logs/prometheus.log" 2>&1 &
pids+=($!)

echo "== submit the reference job"
sed -e "s|\${DATA}|$work/data|g; s|\${WORK}|$work|g; s|\${MIN_WORKERS}|1|; s|\${MAX_WORKERS}|$workers|" \
  deploy/local/reference_job.yaml >"$work/job.yaml"
[[ -n "$epochs" ]] && sed -i "s|^epochs: .*|epochs: $epochs|" "$work/job.yaml"
podtrain() { "$bin/cli/podtrain" --coordinator="$coordinator" "$@"; }
start=$(date +%s)
job=$(podtrain submit "$work/job.yaml" --output json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])') || exit 1
echo "submitted $job"
podtrain watch "$job"
seconds=$(($(date +%s) - start))

echo "== result"
podtrain get "$job" --output json >"$work/job.json"
read -r state accuracy steps epochs_done < <(/usr/bin/python3 - "$work/job.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
steps = int(job.get("committedStep", "-1")) + 1
batch = int(job["spec"]["globalBatch"])
per_epoch = int(job.get("examplesPerEpoch", "1"))
print(job["state"], "%.4f" % float(job.get("evalAccuracy", 0.0)), steps,
      "%.2f" % (steps * batch / per_epoch))
PY
)

echo "== audit: exactly once per epoch in the committed lineage"
"$bin/cli/podtrain-audit" --journal="$work/journal.db" --job="$job" | tee "$work/audit.txt"
missing=$(sed -n 's/.* missing=\([0-9]*\).*/\1/p' "$work/audit.txt" | tail -1)
duplicates=$(sed -n 's/.* duplicates=\([0-9]*\).*/\1/p' "$work/audit.txt" | tail -1)

echo "== Prometheus: the training metrics it scraped, through its HTTP API"
prometheus_series=0
for query in podtrain_worker_examples_total podtrain_worker_loss podtrain_job_committed_step \
  podtrain_coordinator_committed_examples_total; do
  answer=$(curl -s "http://127.0.0.1:$prometheus_port/api/v1/query?query=max_over_time($query%5B10m%5D)")
  series=$(echo "$answer" | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(len(r))' 2>/dev/null || echo 0)
  echo "$query: $series series; $(echo "$answer" | head -c 300)"
  ((series > 0)) && prometheus_series=$((prometheus_series + series))
done
echo "prometheus: $prometheus_series series of training metrics scraped"

echo "RESULT job=${job#jobs/} state=$state test_accuracy=$accuracy audit_missing=${missing:-unknown} audit_duplicates=${duplicates:-unknown} epochs=$epochs_done steps=$steps seconds=$seconds"
[[ "$state" == "SUCCEEDED" && "$missing" == "0" && "$duplicates" == "0" ]]
