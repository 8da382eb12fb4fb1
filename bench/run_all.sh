#!/usr/bin/env bash
# Runs podtrain's benchmarks against its peers and rewrites bench/RESULTS.md
# (issue 8). About 15 minutes on 2 cores; run it on a quiet machine.
#
#   bash bench/run_all.sh [--only NAME]... [--no-install] [--out DIR]
#                         [--timeout SECONDS] [--results FILE]
#
# Runs every bench/bench_<name>.sh that exists, in a fixed order (e2e,
# recovery, sampler, allreduce, coordinator, checkpoint, then any other
# bench_*.sh by name); a listed benchmark whose script is missing shows up as
# "missing" rather than being skipped. --only NAME (repeatable, or
# NAME,NAME) runs just those; the other benchmarks keep their rows and
# sections from the previous RESULTS.md. Each script's output goes to
# DIR/<name>.log (DIR: --out, default a fresh /tmp/podtrain-bench.XXXXXX,
# exported to the scripts as BENCH_OUT) and the console; its last line must be
#   BENCH name=<name> podtrain=<figure> peer=<figure> ratio=<podtrain/peer,
#         higher is better> target=<goal> unit=<unit> [met=yes|no] [...]
# (values without spaces or in double quotes), and its detail section, in
# Markdown, goes to DIR/<name>.md (see bench/lib.sh). RESULTS.md gets a table
# of the BENCH lines, each benchmark's detail section, and for every run the
# machine (nproc, CPU model, load), date, git commit and commands.
# --no-install skips deploy/install_deps.sh and bench/install_bench_deps.sh.
# Every benchmark runs with OPENBLAS_CORETYPE set for this CPU unless it is
# set already (bench_blas_env in bench/lib.sh).
# Exit status: 0 when every selected benchmark produced its BENCH line (a
# missed target is a result, not a failure), 1 otherwise, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

order=(e2e recovery sampler allreduce coordinator checkpoint)
for script in bench/bench_*.sh; do
  [[ -e "$script" ]] || continue
  name=$(basename "$script" .sh)
  name=${name#bench_}
  [[ " ${order[*]} " == *" $name "* ]] || order+=("$name")
done

only=()
install=true
out=""
timeout_seconds=1800
results="$repo/bench/RESULTS.md"
usage="usage: $0 [--only NAME]... [--no-install] [--out DIR] [--timeout SECONDS] [--results FILE]
benchmarks: ${order[*]}"
while (($# > 0)); do
  case "$1" in
    --only) IFS=, read -r -a names <<<"$2"; only+=("${names[@]}"); shift 2 ;;
    --no-install) install=false; shift ;;
    --out) out="$2"; shift 2 ;;
    --timeout) timeout_seconds="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
selected=("${order[@]}")
if ((${#only[@]} > 0)); then
  for name in "${only[@]}"; do
    if [[ " ${order[*]} " != *" $name "* ]]; then
      echo "run_all: unknown benchmark '$name'" >&2
      echo "$usage" >&2
      exit 2
    fi
  done
  selected=()
  for name in "${order[@]}"; do
    [[ " ${only[*]} " == *" $name "* ]] && selected+=("$name")
  done
fi

if [[ -z "$out" ]]; then
  out=$(mktemp -d /tmp/podtrain-bench.XXXXXX) || exit 1
fi
mkdir -p "$out" || exit 1
export BENCH_OUT="$out"
# One BLAS set-up for every benchmark (bench/lib.sh: this CPU's kernels, not
# the SSE3 fallback Debian's OpenBLAS picks on these VMs by itself).
source bench/lib.sh
bench_blas_env
command_line="bash bench/run_all.sh"
((${#only[@]} > 0)) && command_line+=" --only $(
  IFS=,
  echo "${selected[*]}"
)"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "run_all: ${selected[*]} -> $out"

if $install; then
  bash deploy/install_deps.sh || { echo "run_all: deploy/install_deps.sh failed" >&2; exit 1; }
  bash bench/install_bench_deps.sh || { echo "run_all: bench/install_bench_deps.sh failed" >&2; exit 1; }
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }
failures=0
for name in "${selected[@]}"; do
  script="bench/bench_$name.sh"
  rm -f "$out/$name.md" "$out/$name.log" "$out/$name.status"
  if [[ ! -f "$script" ]]; then
    echo "run_all: $script is missing" | tee "$out/$name.log"
    printf 'status=missing\nseconds=0\n' >"$out/$name.status"
    failures=$((failures + 1))
    continue
  fi
  echo "==== $name: bash $script"
  load_before=$(load)
  begin=$(date +%s)
  timeout --kill-after=30 "$timeout_seconds" bash "$script" 2>&1 | tee "$out/$name.log"
  status=${PIPESTATUS[0]}
  seconds=$(($(date +%s) - begin))
  ((status == 124)) && echo "run_all: $name timed out after ${timeout_seconds}s" | tee -a "$out/$name.log"
  last=$(grep -v '^[[:space:]]*$' "$out/$name.log" | tail -1)
  if [[ "$last" != BENCH\ * ]]; then
    echo "run_all: $name: the last line is not a BENCH line" >&2
    failures=$((failures + 1))
  elif ((status != 0)); then
    failures=$((failures + 1))
  fi
  printf 'status=%s\nseconds=%s\nload_before=%s\nload_after=%s\ncommand=bash %s\n' \
    "$status" "$seconds" "$load_before" "$(load)" "$script" >"$out/$name.status"
done

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[[ -n "$(git status --porcelain 2>/dev/null)" ]] && commit+=" + uncommitted changes"
/usr/bin/python3 - "$results" "$out" "$started" "$commit" "$command_line" \
  "${order[*]}" "${selected[*]}" <<'PY'
import os, platform, re, sys

results, out, started, commit, command_line, order, selected = sys.argv[1:8]
order, selected = order.split(), selected.split()

def read(path):
    try:
        return open(path).read()
    except OSError:
        return None

def cpuinfo():
    text = read("/proc/cpuinfo") or ""
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    simd = [f for f in ("avx512f", "avx2", "fma") if f in flags][:1]
    return "%s, %s MHz%s" % (model.group(1).strip() if model else "unknown CPU",
                              "%.0f" % float(mhz.group(1)) if mhz else "?",
                              ", " + simd[0] if simd else "")

def machine():
    mem = re.search(r"MemTotal:\s*(\d+)", read("/proc/meminfo") or "")
    os_name = re.search(r'PRETTY_NAME="([^"]*)"', read("/etc/os-release") or "")
    return "nproc %d, %s, %.0f GB RAM, %s, Linux %s, OPENBLAS_CORETYPE=%s" % (
        os.cpu_count(), cpuinfo(), int(mem.group(1)) / 2**20 if mem else 0,
        os_name.group(1) if os_name else "?", platform.release(),
        os.environ.get("OPENBLAS_CORETYPE") or "unset")

FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')

def bench_line(log):
    lines = [l for l in (log or "").splitlines() if l.strip()]
    if not lines or not lines[-1].startswith("BENCH "):
        return None
    return {k: v.strip('"') for k, v in FIELD.findall(lines[-1])}

def status(name):
    fields = {}
    for line in (read(os.path.join(out, name + ".status")) or "").splitlines():
        key, _, value = line.partition("=")
        fields[key] = value
    return fields

def cell(text):
    return str(text).replace("|", "\\|")

def demote(markdown):
    return "\n".join("#" + l if l.startswith("#") else l for l in markdown.strip().splitlines())

# What the previous file had, for benchmarks not run this time.
old = read(results) or ""
generated = "<!-- generated by bench/run_all.sh -->" in old
old_rows, old_sections = {}, {}
if generated:
    table = re.search(r"^\| benchmark \|.*\n\|[- |]*\n((?:\|.*\n)*)", old, re.M)
    for row in (table.group(1).splitlines() if table else []):
        m = re.match(r"\| (\S+) \| (?!not run yet)", row)
        if m:
            old_rows[m.group(1)] = row
    for m in re.finditer(r"<!-- begin bench (\S+) -->\n(.*?)<!-- end bench \1 -->", old, re.S):
        old_sections[m.group(1)] = m.group(2).strip("\n")
    legacy = re.search(r"<!-- begin legacy -->\n(.*?)<!-- end legacy -->", old, re.S)
    legacy = legacy.group(1).strip("\n") if legacy else None
else:
    body = re.sub(r"^# .*\n", "", old, count=1).strip()
    legacy = demote(body) if body else None

this_machine = machine()
rows, sections = [], []
names = order + [n for n in old_rows if n not in order and n != "benchmark"]
for name in names:
    if name not in selected:
        if name in old_rows:
            rows.append(old_rows[name])
            sections.append((name, old_sections.get(name, "Not run since the table was generated.")))
        else:
            rows.append("| %s | not run yet | | | | | | |" % name)
        continue
    st = status(name)
    log = read(os.path.join(out, name + ".log"))
    line = bench_line(log)
    run = "%s, %s" % (started, commit.split(" ")[0])
    if st.get("status") == "missing":
        rows.append("| %s | missing: bench/bench_%s.sh does not exist | | | | | | %s |" % (name, name, run))
        sections.append((name, "bench/bench_%s.sh does not exist yet." % name))
        continue
    if line is None:
        tail = "\n".join((log or "").splitlines()[-15:])
        rows.append("| %s | FAILED (exit %s, no BENCH line) | | | | | | %s |" % (name, st.get("status"), run))
        body = "The script failed (exit status %s) without its BENCH line; the end of its output:\n\n```\n%s\n```" % (
            st.get("status"), tail)
    else:
        note = "" if st.get("status") == "0" else " (exit %s)" % st.get("status")
        rows.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, cell(line.get("podtrain", "?")), cell(line.get("peer", "?")),
            cell(line.get("ratio", "?")), cell(line.get("target", "?")),
            cell(line.get("met", "—")), cell(line.get("unit", "?")), run + note))
        detail = read(os.path.join(out, name + ".md"))
        body = demote(detail) if detail and detail.strip() else "(the script wrote no detail file)"
    meta = ("*Run %s, commit %s, `%s` (%s s, exit %s; load average %s before, %s after). "
            "Machine: %s.*" % (started, commit, st.get("command", ""), st.get("seconds", "?"),
                              st.get("status", "?"), st.get("load_before", "?"),
                              st.get("load_after", "?"), this_machine))
    line_text = [l for l in (log or "").splitlines() if l.startswith("BENCH ")]
    if line_text:
        body += "\n\n```\n%s\n```" % line_text[-1]
    sections.append((name, meta + "\n\n" + body))

text = ["# Recorded benchmark results", "",
        "<!-- generated by bench/run_all.sh -->",
        "Generated by `bench/run_all.sh`; change the benchmarks (`bench/bench_<name>.sh`), "
        "not this file. Each benchmark runs podtrain and the peer users would pick instead "
        "on the same machine in the same run (issue 8). Targets are goals, not tests. "
        "Machines here are shared 2-core VMs: compare figures within one run, and look at the "
        "load average recorded with each.", "",
        "Reproduce: `bash bench/install_bench_deps.sh && bash bench/run_all.sh` "
        "(one benchmark: `bash bench/run_all.sh --only NAME`).", "",
        "Last run: %s, commit %s, `%s`. Machine: %s." % (started, commit, command_line, this_machine), "",
        "Ratio: podtrain / peer for rates, peer / podtrain for times and sizes; higher is better. "
        "Met: whether podtrain reached the benchmark's target (— when the script does not say).", "",
        "| benchmark | podtrain | peer | ratio (higher is better) | target | met | unit | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
text += rows
text.append("")
for name, body in sections:
    text += ["## %s" % name, "", "<!-- begin bench %s -->" % name, body, "<!-- end bench %s -->" % name, ""]
if legacy:
    text += ["## Earlier results, recorded by hand before run_all.sh", "",
             "<!-- begin legacy -->", legacy, "<!-- end legacy -->", ""]
open(results, "w").write("\n".join(text))
print("run_all: wrote %s" % results)
PY
echo "run_all: outputs in $out; $failures of ${#selected[@]} benchmarks failed"
((failures == 0))
