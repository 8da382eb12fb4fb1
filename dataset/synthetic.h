// Synthetic datasets: manifests with no files behind them, whose examples are
// generated from their id. They let the sampler, the coordinator and the
// workers be exercised at JFT scale (billions of examples, tens of thousands
// of shards) on a machine with no data: a 4e9-example, 40,000-shard manifest
// is a few megabytes of text and reading an example costs one hash per eight
// pixel bytes.
//
// The generator is a pure function of (example id, schema): the same id
// gives the same example in every process, on every machine.
//
// Thread-safety: pure functions.

#ifndef PODTRAIN_DATASET_SYNTHETIC_H_
#define PODTRAIN_DATASET_SYNTHETIC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "dataset/example.h"
#include "dataset/manifest.h"

namespace podtrain::dataset {

// Largest shard count MakeSyntheticManifest accepts (its manifest is about
// 60 bytes of text per shard).
inline constexpr int64_t kMaxSyntheticShards = 10'000'000;

// INVALID_ARGUMENT naming the problem unless MakeSyntheticManifest accepts
// these arguments: a valid name and schema (see ValidateManifest),
// num_examples >= 0 and 1 <= num_shards <= kMaxSyntheticShards. Call this on
// user input first.
absl::Status ValidateSyntheticSpec(const std::string& name,
                                   int64_t num_examples, int64_t num_shards,
                                   const Schema& schema);

// A synthetic manifest of `num_examples` examples in `num_shards` shards
// whose sizes differ by at most one (larger shards first). Shards have no
// path and no bytes; each one's digest is SyntheticShardDigest of its id
// range. Takes O(num_shards) time and touches no disk.
// REQUIRES: ValidateSyntheticSpec(name, num_examples, num_shards, schema).ok()
Manifest MakeSyntheticManifest(const std::string& name, int64_t num_examples,
                               int64_t num_shards, const Schema& schema);

// The digest recorded for a synthetic shard holding ids
// [first_example_id, first_example_id + records): it identifies exactly what
// the generator will produce for that shard.
uint64_t SyntheticShardDigest(int64_t first_example_id, int64_t records);

// The example with id `example_id`: label = hash(id) mod num_classes, pixel
// bytes from a counter-based hash of (id, byte index).
// REQUIRES: ValidateSchema(schema).ok(), example_id >= 0.
Example MakeSyntheticExample(int64_t example_id, const Schema& schema);

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_SYNTHETIC_H_
