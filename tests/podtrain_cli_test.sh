#!/usr/bin/env bash
# End to end through the real binaries: a podtrain-coordinator on 127.0.0.1
# (an OS-chosen port), a synthetic dataset from podtrain-data, and the
# `podtrain` client submitting, inspecting, listing, cancelling and watching
# jobs, with bearer-token auth, and refusing bad input with the right exit
# status (1 for a failed command, 2 for a usage error) and a clear message.
set -uo pipefail

podtrain="$1"
data_tool="$2"
coordinator="$3"
work="${TEST_TMPDIR:-$(mktemp -d)}/podtrain_cli_test"
rm -rf "$work" && mkdir -p "$work"
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# expect_failure "what" EXIT_STATUS "needle in stderr" -- command...
# (an empty needle checks the exit status only; stdout is left in $work/out)
expect_failure() {
  local what="$1" want="$2" needle="$3"
  shift 4
  "$@" >"$work/out" 2>"$work/err"
  local got=$?
  if [[ $got -ne $want ]]; then
    fail "$what: exit status $got, want $want; stderr: $(cat "$work/err")"
  elif [[ -n "$needle" ]] && ! grep -qF -- "$needle" "$work/err"; then
    fail "$what: stderr lacks '$needle': $(cat "$work/err")"
  fi
}

# --- Coordinators: started in the background, stopped on exit. ---
pids=()

# Whether process $1 is running: not gone, and not a zombie (an exited child
# not yet waited for, which `kill -0` would still find).
running() {
  [[ -r /proc/$1/stat ]] && [[ $(cut -d' ' -f3 "/proc/$1/stat") != Z ]]
}

stop_coordinators() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  # SIGTERM drains in about a second; one still running after 10 s is killed.
  for pid in "${pids[@]}"; do
    for ((i = 0; i < 100; i++)); do
      running "$pid" || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
}
trap stop_coordinators EXIT

# start_coordinator NAME [FLAGS...]: returns once $work/NAME.port holds the
# port it serves on.
start_coordinator() {
  local name="$1"
  shift
  # Metrics on an OS-chosen port too, so coordinators (ours, and other
  # tests' on this machine) never collide; --undefok keeps this working with
  # a coordinator that serves no metrics.
  "$coordinator" --address=127.0.0.1:0 --port_file="$work/$name.port" \
    --journal="$work/$name.db" --metrics_address=127.0.0.1:0 \
    --undefok=metrics_address "$@" 2>"$work/$name.log" &
  local pid=$!
  pids+=("$pid")
  # The port file appears (atomically) once the server listens: poll for it,
  # for at most 30 s, and give up early if the process died.
  for ((i = 0; i < 300; i++)); do
    [[ -s "$work/$name.port" ]] && return 0
    running "$pid" || break
    sleep 0.1
  done
  echo "FAIL: coordinator $name did not start: $(cat "$work/$name.log")" >&2
  return 1
}

start_coordinator main || exit 1
address="127.0.0.1:$(cat "$work/main.port")"
pt() { "$podtrain" --coordinator "$address" "$@"; }

echo "== a synthetic dataset"
"$data_tool" synth --out "$work/data" --examples 1000 --shards 10 >/dev/null ||
  { echo "FAIL: podtrain-data synth" >&2; exit 1; }

cat >"$work/job.yaml" <<YAML
# A small CNN on the synthetic dataset.
display_name: cli test
dataset: $work/data
model:
  name: cnn
  hidden: [8, 16]
optimizer:
  sgd: {momentum: 0.9, nesterov: true}
schedule: {base_learning_rate: 0.05, decay: COSINE}
global_batch: 100
epochs: 2
seed: 7
checkpoint: {directory: $work/checkpoints}
YAML

echo "== submit a YAML spec"
pt submit "$work/job.yaml" >"$work/submit.txt" || fail "submit: $(cat "$work/submit.txt")"
grep -q "^name: *jobs/000001$" "$work/submit.txt" || fail "submit: no jobs/000001: $(cat "$work/submit.txt")"
grep -q "^state: *QUEUED$" "$work/submit.txt" || fail "submit: not QUEUED"
grep -q "^length: *2 epochs, global batch 100, seed 7$" "$work/submit.txt" ||
  fail "submit: spec not as written: $(cat "$work/submit.txt")"

echo "== submit again with one request id: the same job"
pt submit "$work/job.yaml" --request_id=retry-1 | grep -q "jobs/000002" || fail "submit --request_id"
pt submit --request_id retry-1 "$work/job.yaml" | grep -q "jobs/000002" ||
  fail "resubmit with the same --request_id made a new job"

echo "== get, in every form of the name, and with the address from the environment"
for name in jobs/000001 000001 1; do
  pt get "$name" | grep -q "^name: *jobs/000001$" || fail "get $name"
done
PODTRAIN_COORDINATOR="$address" "$podtrain" get 1 | grep -q "jobs/000001" ||
  fail "get with PODTRAIN_COORDINATOR"

echo "== list --output json: one job object per line"
pt list --output json >"$work/list.json" || fail "list --output json"
/usr/bin/python3 -c '
import json, sys
jobs = [json.loads(line) for line in sys.stdin]
names = [job["name"] for job in jobs]
assert names == ["jobs/000002", "jobs/000001"], names
assert all(job["state"] == "QUEUED" for job in jobs), jobs
assert jobs[1]["spec"]["displayName"] == "cli test", jobs[1]
' <"$work/list.json" || fail "list --output json: $(cat "$work/list.json")"
pt list --page_size 1 --all --output json | wc -l | grep -qx 2 || fail "list --all"

echo "== cancel, then cancel again"
pt cancel 1 | grep -q "^state: *CANCELLED: cancelled by request$" || fail "cancel"
expect_failure "cancel again" 1 "podtrain: FAILED_PRECONDITION: jobs/000001 has already ended" -- pt cancel 1

echo "== watch a cancelled job: exit 1 with the reason"
expect_failure "watch cancelled" 1 "" -- pt watch 1
grep -q "state QUEUED -> CANCELLED: cancelled by request" "$work/out" ||
  fail "watch: no state line: $(cat "$work/out")"
grep -q "^jobs/000001 ended CANCELLED: cancelled by request$" "$work/out" ||
  fail "watch: no end line: $(cat "$work/out")"

echo "== errors: exit 1 with 'podtrain: CODE: message'"
expect_failure "get unknown" 1 "podtrain: NOT_FOUND: no job named 'jobs/000009'" -- pt get 9
sed 's/^global_batch: 100$/global_batch: 0/' "$work/job.yaml" >"$work/bad.yaml"
expect_failure "bad spec" 1 "podtrain: INVALID_ARGUMENT: spec.global_batch" -- pt submit "$work/bad.yaml"
sed 's/^  hidden:/  hiden:/' "$work/job.yaml" >"$work/typo.yaml"
expect_failure "misspelt field" 1 "typo.yaml:6:3: spec.model.hiden: unknown field" -- pt submit "$work/typo.yaml"
expect_failure "missing spec file" 1 "$work/none.yaml" -- pt submit "$work/none.yaml"

echo "== an unreachable coordinator: exit 1 quickly, naming the address"
closed=$(/usr/bin/python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')
start=$(date +%s%N)
expect_failure "unreachable" 1 "UNAVAILABLE: cannot reach the coordinator at 127.0.0.1:$closed" -- \
  "$podtrain" --coordinator "127.0.0.1:$closed" get 1
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
((elapsed_ms < 10000)) || fail "unreachable: took ${elapsed_ms} ms"

echo "== usage errors: exit 2 with the usage text"
expect_failure "no command" 2 "usage: podtrain" -- "$podtrain"
expect_failure "unknown command" 2 "unknown command 'frobnicate'" -- pt frobnicate
expect_failure "get without a job" 2 "get takes one argument: JOB" -- pt get
expect_failure "a bad job name" 2 "'jobs/x' is not a job name" -- pt get jobs/x
expect_failure "unknown flag" 2 "unknown flag --colour" -- pt list --colour
expect_failure "flag of another command" 2 "--all is a flag of list, not of get" -- pt get 1 --all
expect_failure "bad --output" 2 "--output: expected text or json" -- pt list --output xml
expect_failure "bad --timeout_seconds" 2 "--timeout_seconds" -- pt list --timeout_seconds 0
"$podtrain" --help | grep -q "^usage: podtrain" || fail "--help"

echo "== bearer tokens: refused without, accepted with --token_file or the environment"
printf 's3cret\n' >"$work/token"
printf 'wrong\n' >"$work/wrong-token"
start_coordinator auth --auth_token_file="$work/token" || exit 1
auth_address="127.0.0.1:$(cat "$work/auth.port")"
expect_failure "no token" 1 "podtrain: UNAUTHENTICATED:" -- \
  "$podtrain" --coordinator "$auth_address" list
expect_failure "wrong token" 1 "podtrain: UNAUTHENTICATED: invalid bearer token" -- \
  "$podtrain" --coordinator "$auth_address" --token_file "$work/wrong-token" list
"$podtrain" --coordinator "$auth_address" --token_file "$work/token" submit "$work/job.yaml" |
  grep -q "jobs/000001" || fail "submit with --token_file"
PODTRAIN_TOKEN_FILE="$work/token" "$podtrain" --coordinator "$auth_address" get 1 |
  grep -q "jobs/000001" || fail "get with PODTRAIN_TOKEN_FILE"
expect_failure "missing token file" 1 "$work/no-token" -- \
  "$podtrain" --coordinator "$auth_address" --token_file "$work/no-token" list

if ((failures > 0)); then
  echo "$failures checks failed" >&2
  exit 1
fi
echo "all checks passed"
