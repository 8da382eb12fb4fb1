#!/usr/bin/env bash
# Mutual TLS end to end through the real binaries: a podtrain-coordinator on
# 127.0.0.1 started with --tls_ca/--tls_cert/--tls_key and a plaintext
# health-only port, and the `podtrain` CLI with --tls_* flags submitting and
# getting a job. Clients without a client certificate, in plaintext, or
# trusting another CA are refused (exit 1, with a hint, and no job made);
# bad TLS files are reported by name; the health port answers a plaintext
# grpc.health.v1.Health/Check with SERVING, as a Kubernetes probe would ask.
# Certificates are made here with the openssl command.
set -uo pipefail

podtrain="$1"
data_tool="$2"
coordinator="$3"
openssl=/usr/bin/openssl
work="${TEST_TMPDIR:-$(mktemp -d)}/tls_cli_test"
rm -rf "$work" && mkdir -p "$work"
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# expect_failure "what" EXIT_STATUS "needle in stderr" -- command...
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

echo "== a throwaway PKI: two CAs, a server certificate, a client certificate"
pki="$work/pki"
mkdir -p "$pki"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
make_ca() {
  "$openssl" req -x509 "${ec[@]}" -days 2 -subj "/CN=podtrain-test-$1" \
    -keyout "$pki/$1.key" -out "$pki/$1.crt" 2>>"$pki/openssl.log"
}
# make_leaf NAME CA SERIAL EXTENSIONS
make_leaf() {
  printf '%b' "$4" >"$pki/$1.ext"
  "$openssl" req "${ec[@]}" -subj "/CN=$1" -keyout "$pki/$1.key" \
    -out "$pki/$1.csr" 2>>"$pki/openssl.log" &&
    "$openssl" x509 -req -in "$pki/$1.csr" -CA "$pki/$2.crt" \
      -CAkey "$pki/$2.key" -set_serial "$3" -days 2 -extfile "$pki/$1.ext" \
      -out "$pki/$1.crt" 2>>"$pki/openssl.log"
}
{
  make_ca ca && make_ca other_ca &&
    make_leaf server ca 2 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' &&
    make_leaf client ca 3 'extendedKeyUsage=clientAuth\n'
} || { echo "FAIL: openssl: $(cat "$pki/openssl.log")" >&2; exit 1; }

# --- The coordinator: started in the background, stopped on exit. ---
coordinator_pid=""

# Whether process $1 is running: not gone, and not a zombie.
running() {
  [[ -r /proc/$1/stat ]] && [[ $(cut -d' ' -f3 "/proc/$1/stat") != Z ]]
}

stop_coordinator() {
  [[ -n "$coordinator_pid" ]] || return 0
  kill "$coordinator_pid" 2>/dev/null
  # SIGTERM drains in about a second; one still running after 10 s is killed.
  for ((i = 0; i < 100; i++)); do
    running "$coordinator_pid" || break
    sleep 0.1
  done
  kill -9 "$coordinator_pid" 2>/dev/null
  wait "$coordinator_pid" 2>/dev/null
  coordinator_pid=""
}
trap stop_coordinator EXIT

"$coordinator" --address=127.0.0.1:0 --port_file="$work/port" \
  --journal="$work/journal.db" --metrics_address=127.0.0.1:0 \
  --tls_ca="$pki/ca.crt" --tls_cert="$pki/server.crt" \
  --tls_key="$pki/server.key" --health_address=127.0.0.1:0 \
  --health_port_file="$work/health_port" 2>"$work/coordinator.log" &
coordinator_pid=$!
# The port file appears (atomically, after the health port file) once the
# server listens: poll for it for at most 30 s, and give up early if the
# process died.
for ((i = 0; i < 300; i++)); do
  [[ -s "$work/port" ]] && break
  running "$coordinator_pid" || break
  sleep 0.1
done
[[ -s "$work/port" ]] ||
  { echo "FAIL: coordinator did not start: $(cat "$work/coordinator.log")" >&2; exit 1; }
grep -q "serving mutual TLS" "$work/coordinator.log" ||
  fail "coordinator log does not say it serves mutual TLS: $(cat "$work/coordinator.log")"
address="127.0.0.1:$(cat "$work/port")"
health_port="$(cat "$work/health_port")"
[[ "$health_port" =~ ^[1-9][0-9]*$ ]] || fail "health port file: '$health_port'"

trusted=(--coordinator "$address" --tls_ca "$pki/ca.crt"
  --tls_cert "$pki/client.crt" --tls_key "$pki/client.key")
pt() { "$podtrain" "${trusted[@]}" "$@"; }

echo "== a synthetic dataset and a small job"
"$data_tool" synth --out "$work/data" --examples 1000 --shards 10 >/dev/null ||
  { echo "FAIL: podtrain-data synth" >&2; exit 1; }
cat >"$work/job.yaml" <<YAML
display_name: tls test
dataset: $work/data
model: {name: mlp, hidden: [8]}
optimizer:
  sgd: {momentum: 0.9}
schedule: {base_learning_rate: 0.1}
global_batch: 10
steps: 5
checkpoint: {directory: $work/checkpoints}
YAML

echo "== refused: no client certificate, plaintext, another CA"
expect_failure "no client certificate" 1 "that --tls_cert and --tls_key hold one" -- \
  "$podtrain" --coordinator "$address" --tls_ca "$pki/ca.crt" \
  --timeout_seconds 5 submit "$work/job.yaml"
grep -qF "UNAVAILABLE: cannot reach the coordinator at $address" "$work/err" ||
  fail "no client certificate: not UNAVAILABLE: $(cat "$work/err")"
expect_failure "plaintext" 1 "give --tls_ca" -- \
  "$podtrain" --coordinator "$address" --timeout_seconds 5 \
  submit "$work/job.yaml"
expect_failure "another CA" 1 "TLS: check that --tls_ca signed" -- \
  "$podtrain" --coordinator "$address" --tls_ca "$pki/other_ca.crt" \
  --tls_cert "$pki/client.crt" --tls_key "$pki/client.key" \
  --timeout_seconds 5 submit "$work/job.yaml"

echo "== bad TLS files: exit 1 naming the file"
expect_failure "missing CA" 1 "cannot open $pki/none.crt" -- \
  "$podtrain" --coordinator "$address" --tls_ca "$pki/none.crt" get 1
expect_failure "key of another certificate" 1 \
  "private key file $pki/server.key does not belong to the certificate in $pki/client.crt" -- \
  "$podtrain" --coordinator "$address" --tls_ca "$pki/ca.crt" \
  --tls_cert "$pki/client.crt" --tls_key "$pki/server.key" get 1
expect_failure "certificate without key" 1 "key_file" -- \
  "$podtrain" --coordinator "$address" --tls_ca "$pki/ca.crt" \
  --tls_cert "$pki/client.crt" get 1

echo "== submit and get with a client certificate"
pt submit "$work/job.yaml" >"$work/submit.txt" 2>&1 ||
  fail "submit: $(cat "$work/submit.txt")"
grep -q "^name: *jobs/000001$" "$work/submit.txt" ||
  fail "submit: not jobs/000001 (a refused client made a job?): $(cat "$work/submit.txt")"
pt get 1 >"$work/get.txt" 2>&1 || fail "get: $(cat "$work/get.txt")"
grep -q "^name: *jobs/000001$" "$work/get.txt" || fail "get: $(cat "$work/get.txt")"
grep -q "^state: *QUEUED$" "$work/get.txt" || fail "get: not QUEUED: $(cat "$work/get.txt")"
pt list --output json | wc -l | grep -qx 1 || fail "list: not exactly one job"

echo "== the plaintext health port: SERVING"
# A gRPC call is an HTTP/2 POST; the request is a 5-byte frame header and
# an empty HealthCheckRequest; SERVING comes back as the frame 00 00000002
# 08 01 (field 1, value 1).
printf '\0\0\0\0\0' >"$work/empty.grpc"
grpc_post() {
  curl -sS --max-time 10 --http2-prior-knowledge \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$work/empty.grpc" -D "$work/headers" -o "$work/body" \
    "http://127.0.0.1:$health_port/$1"
}
grpc_post grpc.health.v1.Health/Check || fail "health: curl failed"
[[ "$(od -An -tx1 "$work/body" | tr -d ' \n')" == 00000000020801 ]] ||
  fail "health: not SERVING: $(od -An -tx1 "$work/body"); $(cat "$work/headers")"
grep -q "^grpc-status: 0" "$work/headers" || fail "health: $(cat "$work/headers")"
# That the health port serves nothing else (UNIMPLEMENTED for JobService) is
# checked with a real gRPC client in services/tls_test: curl answers a
# trailers-only gRPC response with "Stream error in the HTTP/2 framing layer"
# now and then (seen in CI), so it is not asked here.

echo "== SIGTERM: exit 0"
kill "$coordinator_pid"
for ((i = 0; i < 100; i++)); do
  running "$coordinator_pid" || break
  sleep 0.1
done
running "$coordinator_pid" && kill -9 "$coordinator_pid"
wait "$coordinator_pid"
status=$?
coordinator_pid=""
((status == 0)) || fail "coordinator exit status $status after SIGTERM"

if ((failures > 0)); then
  echo "$failures checks failed" >&2
  exit 1
fi
echo "all checks passed"
