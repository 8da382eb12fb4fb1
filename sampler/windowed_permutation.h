// The locality-aware epoch permutation, podtrain's default for training.
//
// A dataset is S shards of records; example id g is its position in manifest
// order (shard, record). Reading a fully shuffled order touches a random shard
// for every example. This permutation keeps I/O local instead: per epoch it
// shuffles the shard order, groups the shuffled shards into windows of w
// consecutive shards, and permutes the examples within each window with a
// FeistelPermutation keyed by (seed, epoch, window). The stream visits window
// 0's examples in shuffled order, then window 1's, and so on, so at any time a
// reader works on at most w shards. w >= S is a full global shuffle (one
// Feistel permutation of [0, N), no tables).
//
// Random access: At(i) costs two binary searches and one Feistel evaluation;
// Fill(begin, count) amortizes the searches over a run of positions, which is
// how the coordinator reads whole steps. Memory: O(S) (two tables of S+1
// words), independent of N.
//
// Thread-safety: immutable after Create; all const methods are thread-safe.

#ifndef PODTRAIN_SAMPLER_WINDOWED_PERMUTATION_H_
#define PODTRAIN_SAMPLER_WINDOWED_PERMUTATION_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "sampler/feistel_permutation.h"

namespace podtrain::sampler {

// Stream tags for DeriveKey: each use of a job's randomness gets its own.
inline constexpr uint64_t kGlobalOrderStream = 1;
inline constexpr uint64_t kShardOrderStream = 2;
// Window j uses kWindowStreamBase + j.
inline constexpr uint64_t kWindowStreamBase = uint64_t{1} << 32;

class WindowedPermutation {
 public:
  // `shard_sizes[s]` is the number of records of shard s (zeros allowed, not
  // all zero); `window` is the number of shards per window (>= 1; >= S means
  // a global shuffle). INVALID_ARGUMENT names the offending argument.
  static absl::StatusOr<WindowedPermutation> Create(
      absl::Span<const int64_t> shard_sizes, int64_t window, uint64_t seed,
      uint64_t epoch);

  uint64_t size() const { return n_; }
  bool is_global() const { return global_.has_value(); }
  int64_t num_windows() const;

  // The example id at position i of the epoch. REQUIRES: i < size().
  uint64_t At(uint64_t i) const;

  // out[k] = At(begin + k) for k < count. REQUIRES: begin + count <= size().
  void Fill(uint64_t begin, uint64_t count, uint64_t* out) const;

  // Heap bytes held (the O(S) tables), for the memory tests and benchmarks.
  size_t MemoryBytes() const;

 private:
  WindowedPermutation() = default;

  // The window holding epoch position i, by binary search.
  int64_t WindowOf(uint64_t i) const;
  // The permutation of window j's examples (derives its round keys).
  FeistelPermutation WindowPermutation(int64_t j) const;
  // Maps a position within the concatenation of the shuffled shards to an
  // example id; `first_slot`/`end_slot` bound the search to one window.
  uint64_t IdAtShuffledOffset(uint64_t offset, int64_t first_slot,
                              int64_t end_slot) const;

  uint64_t n_ = 0;
  int64_t window_ = 0;
  uint64_t seed_ = 0;
  uint64_t epoch_ = 0;
  // Set for a global shuffle; the tables below are empty then.
  std::optional<FeistelPermutation> global_;
  int64_t num_shards() const {
    return static_cast<int64_t>(slot_start_.size()) - 1;
  }

  // slot_delta_[q]: the id of the first record of the shard at position q
  // of this epoch's shard order, minus slot_start_[q] (mod 2^64): the id at
  // shuffled offset o inside slot q is o + slot_delta_[q], one load.
  std::vector<uint64_t> slot_delta_;
  // slot_start_[q]: offset of slot q's first record in the shuffled
  // concatenation; slot_start_[S] = N.
  std::vector<uint64_t> slot_start_;
};

}  // namespace podtrain::sampler

#endif  // PODTRAIN_SAMPLER_WINDOWED_PERMUTATION_H_
