#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, and runs the
# most end-to-end thing podtrain has so far: the data path of the local demo.
# It ingests Fashion-MNIST from the Debian package into record shards,
# verifies every checksum, shows the manifest, prints what each rank of a
# 2-worker world trains on at a step, and describes a JFT-scale (4 billion
# examples, 40,000 shards) synthetic dataset and samples from it. The local
# pod demo (coordinator + workers + Prometheus) replaces this with the
# end-to-end issue.
#
#   bash deploy/local/run.sh [WORKDIR]     (default: .demo/ in the checkout)
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-$PWD/.demo}"

bash deploy/install_deps.sh
trap 'bazel shutdown >/dev/null 2>&1 || true' EXIT
bazel build //cli:podtrain-data
tool="$PWD/bazel-bin/cli/podtrain-data"
rm -rf "$work" && mkdir -p "$work"

echo "== ingest Fashion-MNIST into $work/fashion-mnist (8 shards per split)"
"$tool" ingest fashion-mnist --out "$work/fashion-mnist" --shards 8

echo "== verify every record's checksum"
"$tool" verify "$work/fashion-mnist/train"
"$tool" verify "$work/fashion-mnist/test"

echo "== step 0 of the reference job (seed 42, global batch 256) on 2 workers"
for rank in 0 1; do
  ids=$("$tool" sample --dataset "$work/fashion-mnist/train" --seed 42 \
    --batch 256 --step 0 --world 2 --rank "$rank" | tr '\n' ' ')
  echo "rank $rank trains on 128 examples: $(echo "$ids" | cut -d' ' -f1-8) ..."
done

echo "== exactly once: epoch 0 of the reference job holds every example once"
distinct=$("$tool" sample --dataset "$work/fashion-mnist/train" --seed 42 --epoch 0 |
  sort -n | uniq | wc -l)
echo "epoch 0: $distinct distinct examples of 60000"

echo "== a JFT-scale synthetic dataset: 4,000,000,000 examples in 40,000 shards"
"$tool" synth --out "$work/jft" --name jft-synthetic --examples 4000000000 --shards 40000
echo "rank 7 of 64 at step 1,000,000 (global batch 4096, windows of 16 shards):"
"$tool" sample --dataset "$work/jft" --window 16 --seed 42 --batch 4096 \
  --step 1000000 --world 64 --rank 7 | head -5
echo "RESULT demo=data-path state=SUCCEEDED epoch0_distinct=$distinct"
