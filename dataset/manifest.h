// The dataset manifest: a small, human-readable text file named MANIFEST in a
// dataset directory that lists the dataset's shards in order, their record
// counts and content digests, the example schema, and a fingerprint over all
// of it. Example id g in [0, num_examples()) is the g-th record in manifest
// order (shard 0's records, then shard 1's, ...). A job records the
// fingerprint and refuses to resume on a dataset whose fingerprint changed.
//
// The file (written by WriteManifest; order of lines is fixed, '#' lines and
// blank lines are ignored):
//   format podtrain-manifest-1
//   name fashion-mnist-train
//   schema height=28 width=28 channels=1 num_classes=10
//   synthetic false
//   examples 60000
//   shards 3
//   shard path=shard-00000-of-00003.rec records=20000 bytes=16020056 ...
//       ... digest=a0322ae41d34f96d    (wrapped here; one line per shard)
//   ...
//   fingerprint 47048cfa71cde7f1
// ReadManifest recomputes the fingerprint and refuses a file whose recorded
// one does not match, so a hand-edited or damaged MANIFEST is caught.
//
// Thread-safety: the types are plain values; the functions are thread-safe.

#ifndef PODTRAIN_DATASET_MANIFEST_H_
#define PODTRAIN_DATASET_MANIFEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace podtrain::dataset {

inline constexpr char kManifestFileName[] = "MANIFEST";
inline constexpr char kManifestFormat[] = "podtrain-manifest-1";

struct ShardInfo {
  std::string path;  // relative to the dataset dir; empty for synthetic shards
  int64_t records = 0;
  uint64_t digest = 0;  // the record shard's content digest
  int64_t bytes = 0;    // file size; 0 for synthetic shards
};

// Image examples: height x width x channels uint8 pixels and one uint8 label
// in [0, num_classes). Synthetic datasets use the same schema.
struct Schema {
  int32_t height = 0, width = 0, channels = 0;
  int32_t num_classes = 0;
};

struct Manifest {
  std::string name;
  Schema schema;
  bool synthetic = false;  // examples are generated from their id, no files
  std::vector<ShardInfo> shards;

  int64_t num_examples() const;
  // shards[i].records for every shard, in order.
  std::vector<int64_t> ShardSizes() const;
  // A stable 64-bit hash over name, schema, the synthetic flag and every
  // shard's (path, records, digest), in order. Identical across runs and
  // machines (stable_hash.h).
  uint64_t Fingerprint() const;
};

bool operator==(const ShardInfo& a, const ShardInfo& b);
bool operator==(const Schema& a, const Schema& b);
bool operator==(const Manifest& a, const Manifest& b);

// `fingerprint` as 16 lowercase hex digits, e.g. "00ab12cd34ef5678".
std::string FingerprintHex(uint64_t fingerprint);

// `total` items split into `parts` contiguous runs whose sizes differ by at
// most one, larger runs first: EqualShardSizes(10, 4) == {3, 3, 2, 2}.
// REQUIRES: total >= 0, parts >= 1.
std::vector<int64_t> EqualShardSizes(int64_t total, int64_t parts);

// INVALID_ARGUMENT naming the field unless every dimension is at least 1,
// num_classes is in [1, 256] (labels are one byte) and an example's pixels
// fit in 2^31 bytes.
absl::Status ValidateSchema(const Schema& schema);

// INVALID_ARGUMENT naming what is wrong unless `manifest` can be written and
// read back: a printable name, a valid schema, shard paths that are relative,
// distinct and free of whitespace and ".." (empty exactly when synthetic),
// non-negative counts, and a total that fits in int64.
absl::Status ValidateManifest(const Manifest& manifest);

// The text of the MANIFEST file for `manifest` (which must be valid).
std::string ManifestToText(const Manifest& manifest);

// Parses MANIFEST text; `file_name` only labels errors. A malformed line is
// INVALID_ARGUMENT "<file_name>:<line>: <what is wrong>"; a file that ends
// early, or whose fingerprint does not match its contents, is DATA_LOSS.
absl::StatusOr<Manifest> ParseManifest(absl::string_view text,
                                       absl::string_view file_name);

// `dir`/MANIFEST.
std::string ManifestPath(absl::string_view dir);

// Validates `manifest` and writes `dir`/MANIFEST atomically (temporary file,
// fsync, rename, fsync of `dir`). `dir` must exist.
absl::Status WriteManifest(const std::string& dir, const Manifest& manifest);

// Reads and parses `dir`/MANIFEST. A missing `dir` or MANIFEST is NOT_FOUND
// naming the path; other errors as ParseManifest.
absl::StatusOr<Manifest> ReadManifest(const std::string& dir);

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_MANIFEST_H_
