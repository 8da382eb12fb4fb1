#include "dataset/synthetic.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "dataset/stable_hash.h"

namespace podtrain::dataset {
namespace {

// Distinct salts keep the label, pixel and digest streams of one id
// independent of each other.
constexpr uint64_t kLabelSalt = 0x6c6162656c5f5f31ULL;   // "label__1"
constexpr uint64_t kPixelSalt = 0x706978656c735f31ULL;   // "pixels_1"
constexpr uint64_t kDigestSalt = 0x7368617264737931ULL;  // "shardsy1"

}  // namespace

absl::Status ValidateSyntheticSpec(const std::string& name,
                                   int64_t num_examples, int64_t num_shards,
                                   const Schema& schema) {
  if (num_examples < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a synthetic dataset needs num_examples >= 0, got ", num_examples));
  }
  if (num_shards < 1 || num_shards > kMaxSyntheticShards) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a synthetic dataset needs 1 <= num_shards <= ", kMaxSyntheticShards,
        ", got ", num_shards));
  }
  // Whatever else a manifest must satisfy (name, schema), checked on a
  // one-shard stand-in so that this stays O(1).
  Manifest probe;
  probe.name = name;
  probe.schema = schema;
  probe.synthetic = true;
  probe.shards.push_back(ShardInfo{"", num_examples, 0, 0});
  return ValidateManifest(probe);
}

Manifest MakeSyntheticManifest(const std::string& name, int64_t num_examples,
                               int64_t num_shards, const Schema& schema) {
  const absl::Status valid =
      ValidateSyntheticSpec(name, num_examples, num_shards, schema);
  CHECK(valid.ok()) << "MakeSyntheticManifest: " << valid;
  Manifest manifest;
  manifest.name = name;
  manifest.schema = schema;
  manifest.synthetic = true;
  manifest.shards.reserve(num_shards);
  int64_t first_id = 0;
  for (const int64_t records : EqualShardSizes(num_examples, num_shards)) {
    manifest.shards.push_back(
        ShardInfo{"", records, SyntheticShardDigest(first_id, records), 0});
    first_id += records;
  }
  return manifest;
}

uint64_t SyntheticShardDigest(int64_t first_example_id, int64_t records) {
  Fnv1a64 hash;
  hash.AddU64(kDigestSalt);
  hash.AddU64(first_example_id);
  hash.AddU64(records);
  return hash.value();
}

Example MakeSyntheticExample(int64_t example_id, const Schema& schema) {
  const uint64_t id = example_id;
  Example example;
  example.label = SplitMix64(id ^ kLabelSalt) % schema.num_classes;
  // Eight pixel bytes per 64-bit word of the stream keyed by the id.
  const uint64_t key = SplitMix64(id ^ kPixelSalt);
  const int64_t size = PixelCount(schema);
  example.pixels.resize(size);
  for (int64_t i = 0; i < size; i += 8) {
    uint64_t word = SplitMix64(key + i / 8);
    for (int64_t j = i; j < i + 8 && j < size; ++j, word >>= 8) {
      example.pixels[j] = static_cast<char>(word);
    }
  }
  return example;
}

}  // namespace podtrain::dataset
