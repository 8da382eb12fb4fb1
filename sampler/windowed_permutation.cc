#include "sampler/windowed_permutation.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace podtrain::sampler {

absl::StatusOr<WindowedPermutation> WindowedPermutation::Create(
    absl::Span<const int64_t> shard_sizes, int64_t window, uint64_t seed,
    uint64_t epoch) {
  if (shard_sizes.empty()) {
    return absl::InvalidArgumentError("shard_sizes: a dataset needs a shard");
  }
  if (shard_sizes.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard_sizes: at most 2^32-1 shards, got ", shard_sizes.size()));
  }
  if (window < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("window: must be >= 1 shard, got ", window));
  }
  uint64_t total = 0;
  for (size_t s = 0; s < shard_sizes.size(); ++s) {
    if (shard_sizes[s] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shard_sizes[", s, "]: negative record count ", shard_sizes[s]));
    }
    total += static_cast<uint64_t>(shard_sizes[s]);
    if (total > FeistelPermutation::kMaxSize) {
      return absl::InvalidArgumentError("shard_sizes: more than 2^62 records");
    }
  }
  if (total == 0) {
    return absl::InvalidArgumentError(
        "shard_sizes: every shard is empty (N = 0)");
  }

  WindowedPermutation p;
  p.n_ = total;
  p.seed_ = seed;
  p.epoch_ = epoch;
  const int64_t num_shards = static_cast<int64_t>(shard_sizes.size());
  p.window_ = std::min(window, num_shards);
  if (p.window_ == num_shards) {
    auto global = FeistelPermutation::Create(
        total, DeriveKey(seed, epoch, kGlobalOrderStream));
    if (!global.ok()) return global.status();
    p.global_ = *global;
    return p;
  }

  std::vector<uint64_t> manifest_start(num_shards);
  uint64_t start = 0;
  for (int64_t s = 0; s < num_shards; ++s) {
    manifest_start[s] = start;
    start += shard_sizes[s];
  }
  auto shard_order = FeistelPermutation::Create(
      num_shards, DeriveKey(seed, epoch, kShardOrderStream));
  if (!shard_order.ok()) return shard_order.status();
  p.slot_delta_.resize(num_shards);
  p.slot_start_.resize(num_shards + 1);
  uint64_t offset = 0;
  for (int64_t q = 0; q < num_shards; ++q) {
    const uint64_t shard = (*shard_order)(q);
    p.slot_start_[q] = offset;
    p.slot_delta_[q] = manifest_start[shard] - offset;  // mod 2^64
    offset += shard_sizes[shard];
  }
  p.slot_start_[num_shards] = offset;
  return p;
}

int64_t WindowedPermutation::num_windows() const {
  if (global_) return 1;
  return (num_shards() + window_ - 1) / window_;
}

int64_t WindowedPermutation::WindowOf(uint64_t i) const {
  // The last window whose first record is <= i (empty windows are skipped
  // because their start equals the next window's).
  int64_t lo = 0;
  int64_t hi = num_windows();  // invariant: start(lo) <= i < start(hi)
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (slot_start_[mid * window_] <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

FeistelPermutation WindowedPermutation::WindowPermutation(int64_t j) const {
  const int64_t first = j * window_;
  const int64_t end = std::min<int64_t>(first + window_, num_shards());
  const uint64_t records = slot_start_[end] - slot_start_[first];
  // Only called for windows holding position i, so never empty.
  return *FeistelPermutation::Create(
      records, DeriveKey(seed_, epoch_, kWindowStreamBase + j),
      FeistelPermutation::kWindowRounds);
}

uint64_t WindowedPermutation::IdAtShuffledOffset(uint64_t offset,
                                                 int64_t first_slot,
                                                 int64_t end_slot) const {
  // The last slot in [first_slot, end_slot) starting at or before `offset`:
  // the non-empty slot containing it (empty slots share the next one's
  // start). Branch-free halving, so the compiler emits conditional moves and
  // consecutive lookups do not stall on mispredicted branches.
  const uint64_t* base = slot_start_.data() + first_slot;
  int64_t length = end_slot - first_slot;
  while (length > 1) {
    const int64_t half = length / 2;
    base = (base[half] <= offset) ? base + half : base;
    length -= half;
  }
  const int64_t slot = base - slot_start_.data();
  return offset + slot_delta_[slot];
}

uint64_t WindowedPermutation::At(uint64_t i) const {
  if (global_) return (*global_)(i);
  const int64_t j = WindowOf(i);
  const int64_t first = j * window_;
  const int64_t end = std::min<int64_t>(first + window_, num_shards());
  const uint64_t window_start = slot_start_[first];
  const uint64_t local = WindowPermutation(j)(i - window_start);
  return IdAtShuffledOffset(window_start + local, first, end);
}

void WindowedPermutation::Fill(uint64_t begin, uint64_t count,
                               uint64_t* out) const {
  if (global_) {
    global_->ApplyToRange(begin, count, out);
    return;
  }
  uint64_t i = begin;
  const uint64_t stop = begin + count;
  while (i < stop) {
    const int64_t j = WindowOf(i);
    const int64_t first = j * window_;
    const int64_t end = std::min<int64_t>(first + window_, num_shards());
    const uint64_t window_start = slot_start_[first];
    const uint64_t window_records = slot_start_[end] - window_start;
    const uint64_t run = std::min<uint64_t>(slot_start_[end], stop) - i;
    // Two passes over the run: the window-local permutation, then the shard
    // lookup of each shuffled offset, each a loop of independent work. The
    // lookup starts from a proportional guess (exact for equal shards, off
    // by a slot or so for near-equal ones) instead of a binary search:
    // guess = local * slots / records, as a 64.64 fixed-point multiply.
    WindowPermutation(j).ApplyToRange(i - window_start, run, out);
    const uint64_t slots = end - first;
    const unsigned __int128 scale =
        (static_cast<unsigned __int128>(slots) << 64) / window_records;
    const uint64_t* starts = slot_start_.data();
    for (uint64_t k = 0; k < run; ++k) {
      const uint64_t local = out[k];
      int64_t slot =
          first + static_cast<int64_t>(
                      (static_cast<unsigned __int128>(local) * scale) >> 64);
      if (slot >= end) slot = end - 1;
      const uint64_t offset = window_start + local;
      while (starts[slot] > offset) --slot;
      while (slot + 1 < end && starts[slot + 1] <= offset) ++slot;
      out[k] = offset + slot_delta_[slot];
    }
    out += run;
    i += run;
  }
}

size_t WindowedPermutation::MemoryBytes() const {
  return sizeof(*this) + slot_delta_.capacity() * sizeof(uint64_t) +
         slot_start_.capacity() * sizeof(uint64_t);
}

}  // namespace podtrain::sampler
