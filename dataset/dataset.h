// Dataset: random access to the examples of a dataset directory by example
// id. Id g in [0, num_examples()) is the g-th record in manifest order
// (shard 0's records, then shard 1's, ...); the sampler maps training stream
// positions to these ids and workers read them here.
//
// A dataset directory holds MANIFEST (manifest.h) and, unless the dataset is
// synthetic, the record shards it lists. Synthetic datasets generate each
// example from its id (synthetic.h) and never touch disk after Open.
//
// Open checks every shard file against the manifest (record count, digest,
// size) so a job fails at start rather than mid-epoch. Shard readers are then
// kept in a bounded LRU cache (DatasetOptions::max_open_shards) and reopened
// on demand, so datasets with more shards than file descriptors still work.
//
// Thread-safety: Read, Locate and Verify may be called concurrently from any
// number of threads; the shard cache is guarded by one mutex that is never
// held during I/O.
//
// Example:
//   ASSIGN_OR_RETURN(std::unique_ptr<Dataset> dataset,
//                    Dataset::Open("/data/fmnist/train"));
//   ASSIGN_OR_RETURN(Example example, dataset->Read(12345));

#ifndef PODTRAIN_DATASET_DATASET_H_
#define PODTRAIN_DATASET_DATASET_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "dataset/example.h"
#include "dataset/manifest.h"
#include "dataset/record_shard.h"

namespace podtrain::dataset {

struct DatasetOptions {
  // Most shard files kept open at once (each holds a descriptor and its
  // index: 8 bytes per record).
  int max_open_shards = 128;
};

// Where an example id lives.
struct ExampleLocation {
  int64_t shard = 0;
  int64_t record = 0;  // within the shard
};

class Dataset {
 public:
  // Opens the dataset in `dir` (the directory holding MANIFEST). Errors:
  // NOT_FOUND for a missing directory, MANIFEST or shard file (naming it);
  // DATA_LOSS naming the shard when a file's record count, digest or size
  // disagrees with the manifest or its structure is damaged; as ReadManifest
  // for a malformed MANIFEST.
  static absl::StatusOr<std::unique_ptr<Dataset>> Open(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<Dataset>> Open(
      const std::string& dir, const DatasetOptions& options);

  Dataset(const Dataset&) = delete;
  Dataset& operator=(const Dataset&) = delete;

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return manifest_; }
  int64_t num_examples() const { return num_examples_; }

  // The shard and record of `example_id` (binary search over cumulative
  // shard sizes). OUT_OF_RANGE unless 0 <= example_id < num_examples().
  absl::StatusOr<ExampleLocation> Locate(int64_t example_id) const;

  // Reads and decodes example `example_id`. OUT_OF_RANGE for an id outside
  // [0, num_examples()); DATA_LOSS naming the example, shard file and record
  // for a damaged record.
  absl::StatusOr<Example> Read(int64_t example_id) const;

  // Re-checks everything on disk now: every shard's record count and digest
  // against the manifest, every record's checksum and that every record
  // decodes under the schema. Calls `progress(shard, records)` after each
  // shard. Errors name the shard file and record. For a synthetic dataset it
  // checks each shard's digest against the generator, reading nothing.
  absl::Status Verify(std::function<void(int64_t shard, int64_t records)>
                          progress = nullptr) const;

 private:
  Dataset(std::string dir, Manifest manifest, const DatasetOptions& options);

  // Opens shard `shard`'s file and checks it against the manifest.
  absl::StatusOr<std::unique_ptr<RecordShardReader>> OpenShard(
      int64_t shard) const;
  // A reader for `shard` from the cache, opening it on a miss.
  absl::StatusOr<std::shared_ptr<const RecordShardReader>> ShardReader(
      int64_t shard) const;
  // Adds `reader` to the cache (evicting the least recently used beyond
  // capacity) unless another thread cached one first; returns the cached one.
  std::shared_ptr<const RecordShardReader> CacheReader(
      int64_t shard, std::shared_ptr<const RecordShardReader> reader) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status VerifyShard(int64_t shard) const;
  std::string ShardName(int64_t shard) const;

  // Constant after construction.
  const std::string dir_;
  const Manifest manifest_;
  const DatasetOptions options_;
  // shard_ends_[i] = number of examples in shards 0..i.
  const std::vector<int64_t> shard_ends_;
  const int64_t num_examples_;

  struct CachedReader {
    std::shared_ptr<const RecordShardReader> reader;
    std::list<int64_t>::iterator lru_position;
  };
  mutable absl::Mutex mu_;
  // Most recently used shard first.
  mutable std::list<int64_t> lru_ ABSL_GUARDED_BY(mu_);
  mutable absl::flat_hash_map<int64_t, CachedReader> open_shards_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_DATASET_H_
