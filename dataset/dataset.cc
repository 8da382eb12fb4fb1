#include "dataset/dataset.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "dataset/synthetic.h"

namespace podtrain::dataset {
namespace {

std::vector<int64_t> CumulativeEnds(const Manifest& manifest) {
  std::vector<int64_t> ends;
  ends.reserve(manifest.shards.size());
  int64_t total = 0;
  for (const ShardInfo& shard : manifest.shards) {
    total += shard.records;
    ends.push_back(total);
  }
  return ends;
}

std::string Hex(uint64_t value) { return absl::StrFormat("%016x", value); }

}  // namespace

absl::StatusOr<std::unique_ptr<Dataset>> Dataset::Open(const std::string& dir) {
  return Open(dir, DatasetOptions());
}

absl::StatusOr<std::unique_ptr<Dataset>> Dataset::Open(
    const std::string& dir, const DatasetOptions& options) {
  if (options.max_open_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("DatasetOptions.max_open_shards must be >= 1, got ",
                     options.max_open_shards));
  }
  ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(dir));
  auto dataset =
      std::unique_ptr<Dataset>(new Dataset(dir, std::move(manifest), options));
  if (dataset->manifest_.synthetic) return dataset;
  // Check every shard now, so that a missing or replaced file fails the job
  // at start instead of mid-epoch; keep the first readers open.
  const int64_t num_shards = dataset->manifest_.shards.size();
  for (int64_t shard = 0; shard < num_shards; ++shard) {
    ASSIGN_OR_RETURN(std::unique_ptr<RecordShardReader> reader,
                     dataset->OpenShard(shard));
    if (shard < options.max_open_shards) {
      dataset->CacheReader(shard, std::move(reader));
    }
  }
  return dataset;
}

Dataset::Dataset(std::string dir, Manifest manifest,
                 const DatasetOptions& options)
    : dir_(std::move(dir)),
      manifest_(std::move(manifest)),
      options_(options),
      shard_ends_(CumulativeEnds(manifest_)),
      num_examples_(shard_ends_.empty() ? 0 : shard_ends_.back()) {}

absl::StatusOr<ExampleLocation> Dataset::Locate(int64_t example_id) const {
  if (example_id < 0 || example_id >= num_examples_) {
    return absl::OutOfRangeError(
        absl::StrCat("example id ", example_id, " is out of range [0, ",
                     num_examples_, ") for dataset ", dir_));
  }
  // The first shard that ends after the id holds it (empty shards end where
  // their predecessor does, so they are skipped).
  const int64_t shard =
      std::upper_bound(shard_ends_.begin(), shard_ends_.end(), example_id) -
      shard_ends_.begin();
  const int64_t shard_begin = shard == 0 ? 0 : shard_ends_[shard - 1];
  return ExampleLocation{shard, example_id - shard_begin};
}

absl::StatusOr<Example> Dataset::Read(int64_t example_id) const {
  ASSIGN_OR_RETURN(const ExampleLocation location, Locate(example_id));
  if (manifest_.synthetic) {
    return MakeSyntheticExample(example_id, manifest_.schema);
  }
  const std::string context = absl::StrCat("example ", example_id);
  absl::StatusOr<std::shared_ptr<const RecordShardReader>> reader =
      ShardReader(location.shard);
  if (!reader.ok()) return WithContext(reader.status(), context);
  std::string payload;
  RETURN_IF_ERROR(
      WithContext((*reader)->Read(location.record, &payload), context));
  absl::StatusOr<Example> example = DecodeExample(payload, manifest_.schema);
  if (!example.ok()) {
    return WithContext(example.status(),
                       absl::StrCat(context, ": ", (*reader)->path(),
                                    ": record ", location.record));
  }
  return example;
}

absl::Status Dataset::Verify(
    std::function<void(int64_t shard, int64_t records)> progress) const {
  for (int64_t shard = 0; shard < static_cast<int64_t>(shard_ends_.size());
       ++shard) {
    RETURN_IF_ERROR(VerifyShard(shard));
    if (progress != nullptr) progress(shard, manifest_.shards[shard].records);
  }
  return absl::OkStatus();
}

absl::Status Dataset::VerifyShard(int64_t shard) const {
  const ShardInfo& info = manifest_.shards[shard];
  if (manifest_.synthetic) {
    const int64_t first_id = shard_ends_[shard] - info.records;
    const uint64_t expected = SyntheticShardDigest(first_id, info.records);
    if (info.digest == expected) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(
        "dataset ", dir_, ": ", ShardName(shard), ": manifest digest ",
        Hex(info.digest), " does not match the generator's ", Hex(expected),
        " for ids [", first_id, ", ", shard_ends_[shard], ")"));
  }
  // A fresh reader, so Verify sees the files as they are now.
  ASSIGN_OR_RETURN(std::unique_ptr<RecordShardReader> reader, OpenShard(shard));
  return reader->VerifyAll([&](int64_t record, absl::string_view payload) {
    return WithContext(DecodeExample(payload, manifest_.schema).status(),
                       absl::StrCat(reader->path(), ": record ", record));
  });
}

std::string Dataset::ShardName(int64_t shard) const {
  if (manifest_.synthetic) return absl::StrCat("synthetic shard ", shard);
  return absl::StrCat("shard ", shard, " (",
                      JoinPath(dir_, manifest_.shards[shard].path), ")");
}

absl::StatusOr<std::unique_ptr<RecordShardReader>> Dataset::OpenShard(
    int64_t shard) const {
  const ShardInfo& info = manifest_.shards[shard];
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(JoinPath(dir_, info.path));
  if (!reader.ok()) {
    return WithContext(reader.status(),
                       absl::StrCat("dataset ", dir_, ": shard ", shard));
  }
  const auto mismatch = [&](absl::string_view what, const auto& on_disk,
                            const auto& in_manifest) {
    return absl::DataLossError(
        absl::StrCat("dataset ", dir_, ": ", ShardName(shard), " has ", what,
                     " ", on_disk, " but the manifest says ", in_manifest,
                     "; the file was replaced or the manifest is stale"));
  };
  if ((*reader)->num_records() != info.records) {
    return mismatch("record count", (*reader)->num_records(), info.records);
  }
  if ((*reader)->digest() != info.digest) {
    return mismatch("content digest", Hex((*reader)->digest()),
                    Hex(info.digest));
  }
  if ((*reader)->file_size() != info.bytes) {
    return mismatch("size", (*reader)->file_size(), info.bytes);
  }
  return reader;
}

absl::StatusOr<std::shared_ptr<const RecordShardReader>> Dataset::ShardReader(
    int64_t shard) const {
  {
    absl::MutexLock lock(&mu_);
    const auto it = open_shards_.find(shard);
    if (it != open_shards_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru_position);
      return it->second.reader;
    }
  }
  // Opened without the lock, so other threads keep reading meanwhile.
  ASSIGN_OR_RETURN(std::unique_ptr<RecordShardReader> reader, OpenShard(shard));
  return CacheReader(shard, std::move(reader));
}

std::shared_ptr<const RecordShardReader> Dataset::CacheReader(
    int64_t shard, std::shared_ptr<const RecordShardReader> reader) const {
  // Evicted readers are closed after the lock is released (a reader still in
  // use by another thread stays open until that thread drops it).
  std::vector<std::shared_ptr<const RecordShardReader>> evicted;
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = open_shards_.try_emplace(shard);
  if (!inserted) {  // another thread opened it first; use theirs
    lru_.splice(lru_.begin(), lru_, it->second.lru_position);
    return it->second.reader;
  }
  lru_.push_front(shard);
  it->second = CachedReader{std::move(reader), lru_.begin()};
  std::shared_ptr<const RecordShardReader> cached = it->second.reader;
  while (static_cast<int64_t>(lru_.size()) > options_.max_open_shards) {
    auto victim = open_shards_.find(lru_.back());
    evicted.push_back(std::move(victim->second.reader));
    open_shards_.erase(victim);
    lru_.pop_back();
  }
  return cached;
}

}  // namespace podtrain::dataset
