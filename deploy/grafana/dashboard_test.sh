#!/usr/bin/env bash
# The Grafana dashboard and provisioning files, offline: the dashboard's
# structure and topics (check_dashboard.py static), every panel query
# parses (`promtool check rules` over them as recording rules), every metric
# it names is exported by the code or recorded by deploy/prometheus/rules,
# the provisioning files point at it; and a broken copy of the dashboard is
# refused. Whether every query returns data is checked live, against the
# local demo's Prometheus (tests/local_demo_test).
# Last line: "N passed, N failed".
set -uo pipefail
root="${TEST_SRCDIR:?run under bazel test}/podtrain"
tmp="${TEST_TMPDIR:?}"
cd "$root" || exit 1
dashboard=deploy/grafana/dashboards/podtrain.json
passed=0
failed=0
check() {  # name command...
  local name="$1"
  shift
  if "$@" >"$tmp/out.txt" 2>&1; then
    passed=$((passed + 1))
    echo "PASS: $name: $(tail -1 "$tmp/out.txt")"
  else
    failed=$((failed + 1))
    echo "FAIL: $name"
    sed 's/^/    /' "$tmp/out.txt"
  fi
}
check "dashboard structure and topics" /usr/bin/python3 deploy/grafana/check_dashboard.py static \
  "$dashboard" --promtool-rules "$tmp/dashboard_rules.yml"
check "every panel query parses (promtool)" promtool check rules "$tmp/dashboard_rules.yml"
check "metric names exist in the code or the recording rules" /usr/bin/python3 \
  deploy/prometheus/check_metric_names.py --source coordinator/coordinator_metrics.cc \
  --source worker/worker_metrics.cc --recording deploy/prometheus/rules/recording.yml "$dashboard"
check "datasource provisioning" grep -qE '^ *type: prometheus' deploy/grafana/provisioning/datasources/prometheus.yml
check "dashboard provisioning" grep -qE '^ *type: file' deploy/grafana/provisioning/dashboards/podtrain.yml

# A broken copy: no job variable, a panel without its data source, a query
# with a syntax error and one with a misspelt metric.
/usr/bin/python3 - "$dashboard" "$tmp/broken.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != "job"]
target_panels = [p for p in d["panels"] if p["type"] != "row"]
target_panels[0]["datasource"] = {"type": "prometheus", "uid": "some-uid"}
target_panels[1]["targets"][0]["expr"] = "rate(podtrain_worker_examples_total[5m]"
target_panels[2]["targets"][0]["expr"] = "podtrain_worker_data_waits_seconds_sum"
json.dump(d, open(sys.argv[2], "w"))
PY
check "a broken dashboard is refused" bash -c "
  ! /usr/bin/python3 deploy/grafana/check_dashboard.py static '$tmp/broken.json' \
    --promtool-rules '$tmp/broken_rules.yml' >'$tmp/broken.out' &&
  grep -q 'no query variable .job.' '$tmp/broken.out' &&
  grep -q 'data source must be' '$tmp/broken.out' &&
  ! promtool check rules '$tmp/broken_rules.yml' &&
  ! /usr/bin/python3 deploy/prometheus/check_metric_names.py --source coordinator/coordinator_metrics.cc \
    --source worker/worker_metrics.cc --recording deploy/prometheus/rules/recording.yml '$tmp/broken.json' &&
  echo refused"

echo "$passed passed, $failed failed"
((failed == 0))
