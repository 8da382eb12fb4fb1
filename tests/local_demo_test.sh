#!/usr/bin/env bash
# The README's run command, as a test: deploy/local/run.sh with the binaries
# Bazel built, on the reference recipe (5 epochs of Fashion-MNIST on 2
# workers). Passes when the job SUCCEEDED with test accuracy >= 0.87, the
# audit found 0 missing and 0 duplicated examples in every epoch, the real
# Prometheus server scraped the training metrics, the monitoring files of
# deploy/ hold up against this live run (--check-monitoring: the live
# /metrics of the coordinator and the workers pass `promtool check metrics`,
# Prometheus evaluates every rule of deploy/prometheus/rules without error,
# every Grafana dashboard query returns data), and nothing is left running.
set -uo pipefail
runfiles="${TEST_SRCDIR:?}/podtrain"
work="${TEST_TMPDIR:?}/demo"
output="$TEST_TMPDIR/run.txt"

bash "$runfiles/deploy/local/run.sh" --bin-dir "$runfiles" --workdir "$work" \
  --check-monitoring 2>&1 | tee "$output"
status=${PIPESTATUS[0]}

result=$(grep '^RESULT ' "$output" | tail -1)
echo "$result"
field() { echo "$result" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
failures=0
check() { if ! eval "$2"; then echo "FAIL: $1 ($result)" >&2; failures=$((failures + 1)); fi; }
check "run.sh exit status $status" '[[ $status -eq 0 ]]'
check "state" '[[ "$(field state)" == SUCCEEDED ]]'
check "test accuracy >= 0.87" '/usr/bin/python3 -c "import sys; sys.exit(0 if float(\"$(field test_accuracy)\") >= 0.87 else 1)"'
check "audit missing" '[[ "$(field audit_missing)" == 0 ]]'
check "audit duplicates" '[[ "$(field audit_duplicates)" == 0 ]]'
check "5 epochs" '[[ "$(field epochs)" == 5.00 ]]'
series=$(sed -n 's/^prometheus: \([0-9]*\) series.*/\1/p' "$output")
check "Prometheus scraped training metrics" '[[ "${series:-0}" -gt 0 ]]'
check "live /metrics pass promtool check metrics" '[[ "$(field metrics_lint)" == ok ]]'
check "Prometheus evaluates every rule without error" '[[ "$(field rules)" == ok ]]'
check "every dashboard query returns data" '[[ "$(field dashboard)" == ok ]]'
stray=$(pgrep -f "$runfiles/(coordinator|worker)/podtrain-" | wc -l)
check "no stray processes" '[[ $stray -eq 0 ]]'
pgrep -f "prometheus --config.file=$work" >/dev/null && check "prometheus stopped" 'false'
exit $((failures > 0))
