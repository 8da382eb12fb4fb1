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
#                            [--bin-dir DIR] [--job-template FILE]
#                            [--events FILE] [--no-prometheus]
#                            [--coordinator-flag FLAG]... [--worker-flag FLAG]...
#                            [--check-monitoring]
# --bin-dir uses binaries already built (a directory with cli/, coordinator/
# and worker/ below it, e.g. a Bazel runfiles tree) and skips install/build:
# this is how tests/local_demo_test runs it.
# For benchmarks (bench/): --job-template submits another spec (same
# ${DATA}/${WORK}/${MIN_WORKERS}/${MAX_WORKERS} placeholders); --events
# records the job's event stream (podtrain watch --output json, one event per
# line, with the coordinator's timestamps); --no-prometheus leaves Prometheus
# out; --coordinator-flag/--worker-flag pass extra flags. Each worker's pid is
# written to DIR/worker-<i>.pid.
# --check-monitoring (tests/local_demo_test) also checks the monitoring
# files of deploy/ against this live run: once the job trains, the /metrics
# of the coordinator and of every worker pass `promtool check metrics`;
# Prometheus, which loads deploy/prometheus/rules, evaluates every rule
# without error; and every query of the Grafana dashboard
# (deploy/grafana/dashboards/podtrain.json) returns data over the job's run.
# The RESULT line then ends with metrics_lint=... rules=... dashboard=...
# (ok, or what failed), and the exit status counts them.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

workers=2
work="$repo/.demo"
epochs=""
bin=""
job_template=deploy/local/reference_job.yaml
events=""
with_prometheus=true
check_monitoring=false
coordinator_flags=()
worker_flags=()
usage="usage: $0 [--workers N] [--workdir DIR] [--epochs E] [--bin-dir DIR] [--job-template FILE] [--events FILE] [--no-prometheus] [--coordinator-flag FLAG]... [--worker-flag FLAG]... [--check-monitoring]"
while (($# > 0)); do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --bin-dir) bin="$2"; shift 2 ;;
    --job-template) job_template="$2"; shift 2 ;;
    --events) events="$2"; shift 2 ;;
    --no-prometheus) with_prometheus=false; shift ;;
    --coordinator-flag) coordinator_flags+=("$2"); shift 2 ;;
    --worker-flag) worker_flags+=("$2"); shift 2 ;;
    --check-monitoring) check_monitoring=true; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if $check_monitoring && ! $with_prometheus; then
  echo "run.sh: --check-monitoring needs Prometheus (drop --no-prometheus)" >&2
  exit 2
fi

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

# --- monitoring checks (--check-monitoring) -----------------------------------
metrics_lint=unchecked
rules_health=unchecked
dashboard=unchecked

# Once the job trains (worker-0 has counted examples), every /metrics
# endpoint must pass promtool's linter. Sets metrics_lint.
lint_live_metrics() {
  echo "== promtool check metrics on the live /metrics endpoints"
  local body training=false
  for _ in $(seq 1200); do  # up to 120 s: the workers load libtorch first
    body=$(curl -sf "http://127.0.0.1:$(cat "$work/worker-0.metrics_port")/metrics")
    if grep -qE '^podtrain_worker_examples_total [1-9]' <<<"$body"; then
      training=true
      break
    fi
    sleep 0.1
  done
  if ! $training; then
    metrics_lint="no-training-seen"
    return
  fi
  mkdir -p "$work/metrics"
  local failures=() name port
  local endpoints=("coordinator:$(cat "$work/coordinator.metrics_port")")
  for ((i = 0; i < workers; i++)); do
    endpoints+=("worker-$i:$(cat "$work/worker-$i.metrics_port")")
  done
  for endpoint in "${endpoints[@]}"; do
    name=${endpoint%%:*}
    port=${endpoint#*:}
    curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics/$name.txt"
    if ! grep -q '^podtrain_' "$work/metrics/$name.txt"; then
      failures+=("$name(empty)")
    elif promtool check metrics <"$work/metrics/$name.txt" >"$work/metrics/$name.lint" 2>&1; then
      echo "$name: $(grep -c '^# TYPE' "$work/metrics/$name.txt") metric families, promtool check metrics: ok"
    else
      failures+=("$name")
      echo "$name: promtool check metrics:"
      cat "$work/metrics/$name.lint"
    fi
  done
  # The per-job series the alerts and the dashboard use are there mid-job.
  grep -q '^podtrain_job_last_checkpoint_timestamp_seconds{' "$work/metrics/coordinator.txt" ||
    failures+=("coordinator(no-per-job-series)")
  metrics_lint=ok
  ((${#failures[@]} == 0)) || metrics_lint="failed:$(IFS=,; echo "${failures[*]}")"
}

# Prometheus loaded every rule of deploy/prometheus/rules and evaluates each
# without error. Sets rules_health.
check_rules() {
  echo "== Prometheus rules (deploy/prometheus/rules) evaluated on the live data"
  local expected
  expected=$(cat "$repo"/deploy/prometheus/rules/*.yml | grep -cE '^ *- (record|alert):')
  curl -s "http://127.0.0.1:$prometheus_port/api/v1/rules" >"$work/rules.json"
  rules_health=$(/usr/bin/python3 - "$work/rules.json" "$expected" <<'PY'
import json, sys
rules = [r for g in json.load(open(sys.argv[1]))["data"]["groups"] for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") != "ok" or r.get("lastError")]
for r in rules:
    print(f"  {r['type']:9} {r['name']}: {r.get('health')} {r.get('lastError', '')}", file=sys.stderr)
if len(rules) != int(sys.argv[2]):
    print(f"loaded-{len(rules)}-of-{sys.argv[2]}")
elif bad:
    print("failed:" + ",".join(bad))
else:
    print("ok")
PY
  )
  echo "rules: $rules_health"
}

# Every query of the Grafana dashboard returns data over the job's run, with
# the dashboard's variables set to this job. Sets dashboard.
check_dashboard() {
  echo "== Grafana dashboard: every panel query through Prometheus' HTTP API"
  if /usr/bin/python3 deploy/grafana/check_dashboard.py live deploy/grafana/dashboards/podtrain.json \
    --prometheus "http://127.0.0.1:$prometheus_port" --start "$start" --end "$(date +%s)" \
    --var "job=$job" --scrape-interval 1 --step 2 | tee "$work/dashboard.txt"; then
    dashboard=ok
  else
    dashboard="failed:$(grep -c '^PROBLEM' "$work/dashboard.txt")-queries"
  fi
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
  --journal="$work/journal.db" "${coordinator_flags[@]}" >"$work/logs/coordinator.log" 2>&1 &
pids+=($!)
wait_for_file "$work/coordinator.port" 30 || exit 1
coordinator="127.0.0.1:$(cat "$work/coordinator.port")"
echo "coordinator on $coordinator"

echo "== start $workers workers"
for ((i = 0; i < workers; i++)); do
  "$bin/worker/podtrain-worker" --coordinator="$coordinator" --worker_id="worker-$i" \
    --metrics_address=127.0.0.1:0 --metrics_port_file="$work/worker-$i.metrics_port" \
    "${worker_flags[@]}" >"$work/logs/worker-$i.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/worker-$i.pid"
done

if $with_prometheus; then
echo "== start Prometheus (scraping the coordinator and the workers)"
coordinator_target="\"127.0.0.1:$(cat "$work/coordinator.metrics_port")\""
worker_targets=""
for ((i = 0; i < workers; i++)); do
  wait_for_file "$work/worker-$i.metrics_port" 30 || exit 1
  worker_targets="$worker_targets${worker_targets:+, }\"127.0.0.1:$(cat "$work/worker-$i.metrics_port")\""
done
prometheus_port=$(free_port)
# The same scrape jobs and rules as on Kubernetes (deploy/prometheus/).
sed -e "s|\${COORDINATOR_TARGETS}|$coordinator_target|; s|\${WORKER_TARGETS}|$worker_targets|" \
  -e "s|\${RULES}|$repo/deploy/prometheus/rules|" deploy/local/prometheus.yml >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null || exit 1
prometheus --config.file="$work/prometheus.yml" --web.listen-address="127.0.0.1:$prometheus_port" \
  --storage.tsdb.path="$work/prometheus" >"$work/logs/prometheus.log" 2>&1 &
pids+=($!)
fi

echo "== submit the reference job"
sed -e "s|\${DATA}|$work/data|g; s|\${WORK}|$work|g; s|\${MIN_WORKERS}|1|; s|\${MAX_WORKERS}|$workers|" \
  "$job_template" >"$work/job.yaml"
[[ -n "$epochs" ]] && sed -i "s|^epochs: .*|epochs: $epochs|" "$work/job.yaml"
podtrain() { "$bin/cli/podtrain" --coordinator="$coordinator" "$@"; }
start=$(date +%s)
job=$(podtrain submit "$work/job.yaml" --output json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])') || exit 1
echo "submitted $job"
$check_monitoring && lint_live_metrics
if [[ -n "$events" ]]; then
  # One watch stream, not two: every stream costs the coordinator (and the
  # machine a benchmark measures) a serialized job per step.
  podtrain --output json watch "$job" >"$events" 2>"$work/logs/events.txt"
else
  podtrain watch "$job"
fi
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

prometheus_series=0
$with_prometheus && echo "== Prometheus: the training metrics it scraped, through its HTTP API"
$with_prometheus && for query in podtrain_worker_examples_total podtrain_worker_loss podtrain_job_committed_step \
  podtrain_coordinator_committed_examples_total; do
  answer=$(curl -s "http://127.0.0.1:$prometheus_port/api/v1/query?query=max_over_time($query%5B10m%5D)")
  series=$(echo "$answer" | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(len(r))' 2>/dev/null || echo 0)
  echo "$query: $series series; $(echo "$answer" | head -c 300)"
  ((series > 0)) && prometheus_series=$((prometheus_series + series))
done
echo "prometheus: $prometheus_series series of training metrics scraped"
if $check_monitoring; then
  check_rules
  check_dashboard
fi

monitoring=""
$check_monitoring && monitoring=" metrics_lint=$metrics_lint rules=$rules_health dashboard=$dashboard"
echo "RESULT job=${job#jobs/} state=$state test_accuracy=$accuracy audit_missing=${missing:-unknown} audit_duplicates=${duplicates:-unknown} epochs=$epochs_done steps=$steps seconds=$seconds$monitoring"
[[ "$state" == "SUCCEEDED" && "$missing" == "0" && "$duplicates" == "0" ]] &&
  { ! $check_monitoring || [[ "$metrics_lint$rules_health$dashboard" == okokok ]]; }
