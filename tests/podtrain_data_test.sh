#!/usr/bin/env bash
# End to end through the real `podtrain-data` binary: ingest Fashion-MNIST
# from the Debian package, inspect and verify it, catch a corrupted shard,
# print sampler orders, and refuse bad input with a clear message and exit 1.
set -uo pipefail

tool="$1"
work="${TEST_TMPDIR:-$(mktemp -d)}/podtrain_data_test"
rm -rf "$work" && mkdir -p "$work"
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# expect_error "what" "needle in stderr" -- command...
expect_error() {
  local what="$1" needle="$2"
  shift 3
  if "$@" >"$work/out" 2>"$work/err"; then
    fail "$what: succeeded but should have failed"
  elif ! grep -qF -- "$needle" "$work/err"; then
    fail "$what: stderr lacks '$needle': $(cat "$work/err")"
  fi
}

echo "== ingest fashion-mnist"
"$tool" ingest fashion-mnist --out "$work/fm" --shards 4 >"$work/ingest.txt" ||
  fail "ingest"
grep -q "examples:     60000" "$work/ingest.txt" || fail "ingest: no 60000 train"
grep -q "examples:     10000" "$work/ingest.txt" || fail "ingest: no 10000 test"
[[ $(ls "$work"/fm/train/*.rec | wc -l) -eq 4 ]] || fail "ingest: not 4 shards"

echo "== inspect and verify"
"$tool" inspect "$work/fm/train" | grep -q "fingerprint:" || fail "inspect"
"$tool" verify "$work/fm/train" | grep -q "^OK .*60000 examples in 4 shards" ||
  fail "verify clean train"

echo "== verify catches a corrupt byte, naming the shard and record"
shard="$work/fm/test/shard-00002-of-00004.rec"
printf '\xff\xff\xff' | dd of="$shard" bs=1 seek=20000 conv=notrunc status=none
expect_error "verify corrupt" "shard-00002-of-00004.rec" -- "$tool" verify "$work/fm/test"
grep -q "record" "$work/err" || fail "verify corrupt: no record named: $(cat "$work/err")"

echo "== verify catches a truncated shard"
truncate -s -100 "$work/fm/train/shard-00001-of-00004.rec"
expect_error "verify truncated" "shard-00001-of-00004.rec" -- "$tool" verify "$work/fm/train"

echo "== sample: a whole epoch is a permutation (N = 2^16 + 1)"
"$tool" sample --examples 65537 --shards 9 --window 2 --seed 3 --epoch 4 >"$work/epoch.txt" ||
  fail "sample epoch"
[[ $(wc -l <"$work/epoch.txt") -eq 65537 ]] || fail "sample: not 65537 lines"
[[ $(sort -n "$work/epoch.txt" | uniq | wc -l) -eq 65537 ]] || fail "sample: repeats"
[[ $(sort -n "$work/epoch.txt" | head -1) -eq 0 ]] || fail "sample: min is not 0"
[[ $(sort -n "$work/epoch.txt" | tail -1) -eq 65536 ]] || fail "sample: max is not N-1"

echo "== sample: the ranks of a step are consecutive slices of the epoch"
: >"$work/ranks.txt"
for rank in 0 1 2 3 4; do
  "$tool" sample --examples 65537 --shards 9 --window 2 --seed 3 \
    --batch 1000 --step 263 --world 5 --rank "$rank" >>"$work/ranks.txt" ||
    fail "sample rank $rank"
done
# Step 263 of B=1000 is positions [263000, 264000): epoch 4 (starts at
# 4 * 65537 = 262148), offsets 852..1851, lines 853..1852.
sed -n '853,1852p' "$work/epoch.txt" | cmp -s - "$work/ranks.txt" ||
  fail "sample: rank slices differ from the epoch order"

echo "== sample on a dataset directory and at JFT scale"
"$tool" sample --dataset "$work/fm/train" --seed 1 --count 5 | wc -l | grep -qx 5 ||
  fail "sample --dataset"
"$tool" synth --out "$work/jft" --examples 4000000000 --shards 40000 >/dev/null ||
  fail "synth"
"$tool" sample --dataset "$work/jft" --window 16 --seed 5 --batch 4096 \
  --step 1000000 --world 3 --rank 1 | wc -l | grep -qx 1365 || fail "sample at JFT scale"

echo "== bad input: clear errors, exit 1"
expect_error "N = 0" "--examples" -- "$tool" sample --examples 0 --seed 1
expect_error "window 0 is global, -1 is bad" "--window" -- "$tool" sample --examples 10 --window -1
expect_error "world > batch" "world" -- "$tool" sample --examples 10 --batch 4 --step 0 --world 5 --rank 0
expect_error "rank >= world" "rank" -- "$tool" sample --examples 10 --batch 4 --step 0 --world 2 --rank 2
expect_error "unknown dataset dir" "$work/missing" -- "$tool" sample --dataset "$work/missing"
expect_error "verify unknown dir" "$work/missing" -- "$tool" verify "$work/missing"
expect_error "unknown command" "unknown command 'frobnicate'" -- "$tool" frobnicate
expect_error "unknown dataset" "unknown dataset 'cifar'" -- "$tool" ingest cifar --out "$work/c"

if ((failures > 0)); then
  echo "$failures checks failed" >&2
  exit 1
fi
echo "all checks passed"
