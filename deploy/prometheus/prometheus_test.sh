#!/usr/bin/env bash
# The Prometheus side of deploy/, offline: the Kubernetes scrape config and
# the local demo's config pass `promtool check config`; the rules pass
# `promtool check rules`; the rule unit tests (tests/*test*.yml) pass
# `promtool test rules`, and every alert in rules/alerts.yml is exercised by
# one; every metric name the rules use is one the code exports (or a
# recording rule). A rule with a syntax error must be refused (the harness
# can fail). Last line: "N passed, N failed".
#
#   prometheus_test.sh          (from Bazel: runfiles under $TEST_SRCDIR)
set -uo pipefail
root="${TEST_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)/..}/podtrain"
[[ -d "$root/deploy/prometheus" ]] || root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
dir="$root/deploy/prometheus"
passed=0
failed=0
check() {  # name command...
  local name="$1"
  shift
  if "$@" >"$tmp/out.txt" 2>&1; then
    passed=$((passed + 1))
    echo "PASS: $name"
  else
    failed=$((failed + 1))
    echo "FAIL: $name"
    sed 's/^/    /' "$tmp/out.txt"
  fi
}
command -v promtool >/dev/null || { echo "FAIL: no promtool (Debian package prometheus; run deploy/install_deps.sh)"; echo "0 passed, 1 failed"; exit 1; }

# promtool resolves rule_files relative to the config: work in place.
cd "$dir" || exit 1
check "promtool check config prometheus.yml (Kubernetes)" promtool check config prometheus.yml

# The local demo's template, filled in as deploy/local/run.sh does.
sed -e 's|${COORDINATOR_TARGETS}|"127.0.0.1:1"|; s|${WORKER_TARGETS}|"127.0.0.1:2", "127.0.0.1:3"|' \
  -e "s|\${RULES}|$dir/rules|" "$root/deploy/local/prometheus.yml" >"$tmp/local-prometheus.yml"
check "promtool check config deploy/local/prometheus.yml" promtool check config "$tmp/local-prometheus.yml"
check "the local config loads the same rules" grep -q "$dir/rules/\*.yml" "$tmp/local-prometheus.yml"

check "promtool check rules rules/*.yml" promtool check rules rules/*.yml

tests=(tests/*test*.yml)
check "rule test files exist (${#tests[@]})" test "${#tests[@]}" -ge 2 -a -f "${tests[0]}"
for test_file in "${tests[@]}"; do
  check "promtool test rules $test_file" promtool test rules "$test_file"
done

# Every alert has a unit test that expects it to fire.
untested=()
while read -r alert; do
  grep -q "alertname: $alert\$" "${tests[@]}" || untested+=("$alert")
done < <(sed -n 's/^ *- alert: *//p' rules/alerts.yml)
check "every alert has a unit test (untested: ${untested[*]:-none})" test "${#untested[@]}" -eq 0
alerts=$(grep -c -- '- alert:' rules/alerts.yml)
check "alerts.yml defines alerts ($alerts)" test "$alerts" -ge 8

check "metric names exist in the code" /usr/bin/python3 check_metric_names.py \
  --source "$root/coordinator/coordinator_metrics.cc" --source "$root/worker/worker_metrics.cc" \
  --recording rules/recording.yml rules/*.yml

# Negative controls: the tools do refuse bad input.
cat >"$tmp/broken_rules.yml" <<'YAML'
groups:
  - name: broken
    rules:
      - alert: Broken
        expr: rate(podtrain_worker_examples_total[5m] > 0
YAML
check "a rule with a PromQL syntax error is refused" bash -c "! promtool check rules '$tmp/broken_rules.yml'"
echo "podtrain_worker_exampels_total" >"$tmp/typo.yml"
check "a misspelt metric name is refused" bash -c "! /usr/bin/python3 check_metric_names.py \
  --source '$root/coordinator/coordinator_metrics.cc' --source '$root/worker/worker_metrics.cc' '$tmp/typo.yml'"

echo "$passed passed, $failed failed"
((failed == 0))
