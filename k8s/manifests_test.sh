#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (k8s/):
#   - `kubectl kustomize` renders the base and every overlay;
#   - every rendered object validates against the Kubernetes schemas (and
#     the Prometheus Operator's for ServiceMonitors) with unknown fields
#     rejected, and passes podtrain's rules: real flags of the real binaries
#     (their --helpfull), grace period vs. emergency checkpoint, GPU limits,
#     integer PDBs, probe and scrape ports, references that resolve
#     (k8s/validate/validate.mjs);
#   - what each overlay is for: GPUs and ServiceMonitors in gpu only;
#   - the broken fixtures in k8s/testdata/ are rejected, each for every
#     reason its expected.txt lists;
#   - the local-cpu overlay's example job, on the dataset its Job's exact
#     podtrain-data command makes, is accepted by a real coordinator that
#     requires the auth token (on 127.0.0.1).
# Last line: "N passed, N failed".
#
#   manifests_test.sh COORDINATOR WORKER PODTRAIN PODTRAIN_DATA
#
# The validator's npm packages (k8s/validate/package-lock.json) are
# installed by deploy/install_deps.sh with `npm ci` into
# /opt/podtrain-tools/k8s-validate (outside the Bazel sandbox, which has no
# network); PODTRAIN_K8S_VALIDATE_DIR overrides the place.
set -uo pipefail
if (($# != 4)); then
  echo "usage: $0 COORDINATOR WORKER PODTRAIN PODTRAIN_DATA" >&2
  exit 2
fi
root="${TEST_SRCDIR:?run under bazel test}/podtrain"
tmp="${TEST_TMPDIR:?}"
coordinator_bin=$(readlink -f "$1")
worker_bin=$(readlink -f "$2")
podtrain_bin=$(readlink -f "$3")
data_bin=$(readlink -f "$4")
tools="${PODTRAIN_K8S_VALIDATE_DIR:-/opt/podtrain-tools/k8s-validate}"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; }
finish() { echo "$passed passed, $failed failed"; ((failed == 0)); exit $?; }

# --- tools ------------------------------------------------------------------
kubectl=$(command -v kubectl || echo /usr/bin/kubectl)
if [[ ! -x "$kubectl" ]]; then
  fail "kubectl not found (deploy/install_deps.sh says how to get it)"
  finish
fi
if ! cmp -s "$root/k8s/validate/package-lock.json" "$tools/installed-package-lock.json" ||
  [[ ! -d "$tools/node_modules/kubernetes-models" ]]; then
  fail "validator packages missing or stale in $tools: run bash deploy/install_deps.sh"
  finish
fi
# The validator next to a link to the installed node_modules, so its imports
# resolve there.
mkdir -p "$tmp/validate"
cp "$root/k8s/validate/validate.mjs" "$tmp/validate/"
ln -sfn "$tools/node_modules" "$tmp/validate/node_modules"
"$coordinator_bin" --helpfull >"$tmp/coordinator.help" 2>&1
"$worker_bin" --helpfull >"$tmp/worker.help" 2>&1
validate() {  # output-file manifest [--external KIND/NAME]...
  local out="$1" manifest="$2"
  shift 2
  node "$tmp/validate/validate.mjs" --flags "podtrain-coordinator=$tmp/coordinator.help" \
    --flags "podtrain-worker=$tmp/worker.help" "$@" "$manifest" >"$out" 2>&1
}

# --- base and overlays render and validate ----------------------------------
# kustomize does not follow the runfiles' symlinks: work on a copy.
cp -rL "$root/k8s" "$tmp/k8s"
# Objects an overlay expects to exist already (made out of band).
declare -A external=([base]="Secret/podtrain-auth" [gpu]="Secret/podtrain-auth" [local-cpu]="")
targets=(base)
for dir in "$tmp"/k8s/overlays/*/; do targets+=("overlays/$(basename "$dir")"); done
((${#targets[@]} >= 3)) && pass "overlays found: ${targets[*]}" || fail "expected base + 2 overlays, found ${targets[*]}"
for target in "${targets[@]}"; do
  name=$(basename "$target")
  rendered="$tmp/$name.yaml"
  if ! "$kubectl" kustomize "$tmp/k8s/$target" >"$rendered" 2>"$tmp/$name.err"; then
    fail "kubectl kustomize k8s/$target: $(head -c 500 "$tmp/$name.err")"
    continue
  fi
  pass "kubectl kustomize k8s/$target ($(grep -c '^kind:' "$rendered") objects)"
  if [[ -z "${external[$name]+set}" ]]; then
    fail "k8s/$target: add it to the test's list of overlays (external objects)"
    continue
  fi
  args=()
  for object in ${external[$name]}; do args+=(--external "$object"); done
  if validate "$tmp/$name.out" "$rendered" "${args[@]}"; then
    pass "k8s/$target validates: $(tail -1 "$tmp/$name.out")"
  else
    fail "k8s/$target does not validate:"
    sed 's/^/    /' "$tmp/$name.out"
  fi
done

# --- what each overlay is for -----------------------------------------------
# (A negative check on an overlay that did not render would pass: require
# the rendering first.)
has() { [[ -s "$tmp/$1.yaml" ]] && grep -qE -- "$2" "$tmp/$1.yaml"; }
rendered() { [[ -s "$tmp/$1.yaml" ]] || { fail "$1 did not render"; return 1; }; }
count() { grep -cE -- "$2" "$tmp/$1.yaml"; }
has gpu 'nvidia.com/gpu: 1' && pass "gpu: workers limit nvidia.com/gpu" || fail "gpu: no nvidia.com/gpu limit"
rendered local-cpu && { has local-cpu 'nvidia.com/gpu' && fail "local-cpu asks for GPUs" || pass "local-cpu: no GPUs"; }
[[ $(count gpu '^kind: ServiceMonitor') == 2 ]] && pass "gpu: two ServiceMonitors" || fail "gpu: expected 2 ServiceMonitors"
rendered local-cpu && { has local-cpu '^kind: ServiceMonitor' && fail "local-cpu has a ServiceMonitor (needs the operator's CRDs)" || pass "local-cpu: no ServiceMonitor"; }
for name in local-cpu gpu; do
  for kind in StatefulSet Service PodDisruptionBudget PriorityClass PersistentVolumeClaim; do
    has "$name" "^kind: $kind\$" || fail "$name: no $kind"
  done
  has "$name" 'clusterIP: None' && has "$name" 'publishNotReadyAddresses: true' &&
    has "$name" 'prometheus.io/scrape: "true"' && has "$name" 'podAntiAffinity' &&
    has "$name" 'ReadWrite(Many|Once)' && has "$name" 'secretName: podtrain-auth' &&
    pass "$name: headless worker Service, scrape annotations, anti-affinity, volumes, auth Secret" ||
    fail "$name: missing a headless Service, annotations, anti-affinity, volumes or the auth Secret"
done
has gpu 'ReadWriteMany' && pass "gpu: shared checkpoint volume is ReadWriteMany" || fail "gpu: checkpoints not ReadWriteMany"

# --- broken fixtures are rejected, for the right reasons --------------------
for dir in "$tmp"/k8s/testdata/*/; do
  name=$(basename "$dir")
  if ! "$kubectl" kustomize "$dir" >"$tmp/$name.yaml" 2>"$tmp/$name.err"; then
    fail "testdata/$name does not render: $(head -c 300 "$tmp/$name.err")"
    continue
  fi
  if validate "$tmp/$name.out" "$tmp/$name.yaml" --external Secret/podtrain-auth; then
    fail "testdata/$name was accepted"
    continue
  fi
  missing=0
  while IFS= read -r expected; do
    [[ -z "$expected" ]] && continue
    if ! grep -qF -- "$expected" "$tmp/$name.out"; then
      fail "testdata/$name: rejected, but not for: $expected"
      missing=1
    fi
  done <"$dir/expected.txt"
  if ((missing)); then
    sed 's/^/    /' "$tmp/$name.out"
  else
    pass "testdata/$name rejected: $(grep -cv '^validate:' "$tmp/$name.out") problems, all expected ones"
  fi
done
[[ -d "$root/k8s/testdata/broken-typo" && -d "$root/k8s/testdata/broken-type" ]] &&
  pass "fixtures with a typo'd field and a wrong type exist" || fail "broken fixtures missing"

# --- the example job and its dataset, on a real coordinator -----------------
# podtrain-data with the exact arguments of the local-cpu dataset Job, and
# the example job spec from the ConfigMap, under $tmp instead of
# /var/lib/podtrain.
cat >"$tmp/validate/extract.mjs" <<'JS'
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
const [file, what] = process.argv.slice(2);
for (const d of parseAllDocuments(readFileSync(file, "utf8"))) {
  const o = d.toJS();
  if (what === "job-args" && o?.kind === "Job") {
    console.log(o.spec.template.spec.containers[0].args.join("\n"));
  }
  if (what === "example-job" && o?.kind === "ConfigMap" && o.data?.["example-job.yaml"]) {
    process.stdout.write(o.data["example-job.yaml"]);
  }
}
JS
mapfile -t job_args < <(node "$tmp/validate/extract.mjs" "$tmp/local-cpu.yaml" job-args | sed "s|/var/lib/podtrain|$tmp/var|g")
node "$tmp/validate/extract.mjs" "$tmp/local-cpu.yaml" example-job | sed "s|/var/lib/podtrain|$tmp/var|g" >"$tmp/example-job.yaml"
if ((${#job_args[@]} > 0)) && "$data_bin" "${job_args[@]}" >"$tmp/synth.out" 2>&1; then
  pass "the dataset Job's command works: podtrain-data ${job_args[*]}"
else
  fail "the dataset Job's command failed: podtrain-data ${job_args[*]}: $(tail -3 "$tmp/synth.out" 2>/dev/null)"
fi
echo -n "test-token" >"$tmp/token"
"$coordinator_bin" --address=127.0.0.1:0 --port_file="$tmp/coordinator.port" \
  --metrics_address= --journal="$tmp/journal.db" --auth_token_file="$tmp/token" \
  >"$tmp/coordinator.log" 2>&1 &
coordinator_pid=$!
for _ in $(seq 300); do [[ -s "$tmp/coordinator.port" ]] && break; sleep 0.1; done
address="127.0.0.1:$(cat "$tmp/coordinator.port" 2>/dev/null)"
if "$podtrain_bin" --coordinator="$address" --token_file="$tmp/token" submit "$tmp/example-job.yaml" \
  --output json >"$tmp/submit.out" 2>&1 && grep -q '"state": *"QUEUED"' "$tmp/submit.out"; then
  pass "the example job is accepted by a coordinator (QUEUED, no workers)"
else
  fail "the example job was refused: $(head -c 400 "$tmp/submit.out")"
fi
echo -n "wrong" >"$tmp/wrong-token"
if "$podtrain_bin" --coordinator="$address" --token_file="$tmp/wrong-token" list >"$tmp/list.out" 2>&1; then
  fail "a wrong token was accepted"
else
  pass "the coordinator refuses a wrong token"
fi
kill -TERM "$coordinator_pid" 2>/dev/null
wait "$coordinator_pid" 2>/dev/null

finish
