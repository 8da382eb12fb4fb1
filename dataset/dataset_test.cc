#include "dataset/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataset/file_util.h"
#include "dataset/record_shard.h"
#include "dataset/test_util.h"

namespace podtrain::dataset {
namespace {

using ::podtrain::dataset::testing::NewTempDir;
using ::podtrain::dataset::testing::ReadFileOrDie;
using ::podtrain::dataset::testing::WriteFileOrDie;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr Schema kSchema{2, 2, 1, 5};  // 4 pixel bytes per example

// The example with id `id` in the test datasets: label and pixels both
// derive from the id, so every example is distinct.
Example ExampleFor(int64_t id) {
  Example example;
  example.label = id % kSchema.num_classes;
  for (int i = 0; i < 4; ++i) example.pixels.push_back(char(id * 4 + i));
  return example;
}

ShardInfo WriteShardOfPayloads(const std::string& dir, const std::string& name,
                               const std::vector<std::string>& payloads) {
  absl::StatusOr<std::unique_ptr<RecordShardWriter>> writer =
      RecordShardWriter::Create(JoinPath(dir, name));
  EXPECT_TRUE(writer.ok()) << writer.status();
  for (const std::string& payload : payloads) {
    EXPECT_TRUE((*writer)->Append(payload).ok());
  }
  absl::StatusOr<ShardSummary> summary = (*writer)->Finish();
  EXPECT_TRUE(summary.ok()) << summary.status();
  return ShardInfo{name, summary->records, summary->digest, summary->bytes};
}

// Writes a dataset whose shard i holds `sizes[i]` consecutive examples
// (ExampleFor(id)), and returns its directory.
std::string WriteDataset(const std::vector<int64_t>& sizes) {
  const std::string dir = NewTempDir("dataset");
  Manifest manifest;
  manifest.name = "test";
  manifest.schema = kSchema;
  int64_t id = 0;
  for (size_t shard = 0; shard < sizes.size(); ++shard) {
    std::vector<std::string> payloads;
    for (int64_t r = 0; r < sizes[shard]; ++r) {
      payloads.push_back(EncodeExample(ExampleFor(id++)));
    }
    manifest.shards.push_back(WriteShardOfPayloads(
        dir, ShardFileName(shard, sizes.size()), payloads));
  }
  const absl::Status status = WriteManifest(dir, manifest);
  EXPECT_TRUE(status.ok()) << status;
  return dir;
}

std::string ShardPath(const std::string& dir, int64_t shard,
                      int64_t num_shards) {
  return JoinPath(dir, ShardFileName(shard, num_shards));
}

void ExpectExample(const Dataset& dataset, int64_t id) {
  absl::StatusOr<Example> example = dataset.Read(id);
  ASSERT_TRUE(example.ok()) << id << ": " << example.status();
  EXPECT_EQ(example->label, ExampleFor(id).label) << id;
  EXPECT_EQ(example->pixels, ExampleFor(id).pixels) << id;
}

TEST(DatasetTest, ReadsEveryExampleInManifestOrder) {
  // Includes an empty shard, which ids must skip.
  const std::string dir = WriteDataset({3, 0, 4, 1});
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ((*dataset)->num_examples(), 8);
  EXPECT_EQ((*dataset)->dir(), dir);
  EXPECT_EQ((*dataset)->manifest().name, "test");
  EXPECT_THAT((*dataset)->manifest().ShardSizes(), ElementsAre(3, 0, 4, 1));
  for (int64_t id = 0; id < 8; ++id) ExpectExample(**dataset, id);
}

TEST(DatasetTest, LocatesIdsAcrossShardBoundaries) {
  const std::string dir = WriteDataset({3, 0, 4, 1});
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const std::vector<std::pair<int64_t, std::pair<int64_t, int64_t>>> cases = {
      {0, {0, 0}}, {2, {0, 2}}, {3, {2, 0}}, {6, {2, 3}}, {7, {3, 0}}};
  for (const auto& [id, expected] : cases) {
    absl::StatusOr<ExampleLocation> location = (*dataset)->Locate(id);
    ASSERT_TRUE(location.ok()) << location.status();
    EXPECT_EQ(location->shard, expected.first) << id;
    EXPECT_EQ(location->record, expected.second) << id;
  }
}

TEST(DatasetTest, OutOfRangeIdsAreOutOfRange) {
  const std::string dir = WriteDataset({2, 2});
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  for (const int64_t id : {int64_t{-1}, int64_t{4}, int64_t{1} << 40}) {
    const absl::Status status = (*dataset)->Read(id).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << id;
    EXPECT_THAT(
        std::string(status.message()),
        AllOf(HasSubstr(absl::StrCat("example id ", id)), HasSubstr("[0, 4)")));
  }
}

TEST(DatasetTest, MissingDirectoryIsNotFound) {
  const std::string dir = JoinPath(NewTempDir("dataset"), "nope");
  const absl::Status status = Dataset::Open(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir));
}

TEST(DatasetTest, MissingShardFileIsNotFoundNamingTheShard) {
  const std::string dir = WriteDataset({2, 2, 2});
  const std::string missing = ShardPath(dir, 1, 3);
  ASSERT_EQ(unlink(missing.c_str()), 0);
  const absl::Status status = Dataset::Open(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("shard 1"), HasSubstr(missing)));
}

TEST(DatasetTest, ReplacedShardIsCaughtAtOpen) {
  const std::string dir = WriteDataset({2, 2});
  // Same record count, different contents.
  WriteShardOfPayloads(
      dir, ShardFileName(1, 2),
      {EncodeExample(ExampleFor(7)), EncodeExample(ExampleFor(8))});
  const absl::Status status = Dataset::Open(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      std::string(status.message()),
      AllOf(HasSubstr(ShardPath(dir, 1, 2)), HasSubstr("content digest"),
            HasSubstr("the manifest says")));
}

TEST(DatasetTest, ShardWithWrongRecordCountIsCaughtAtOpen) {
  const std::string dir = WriteDataset({2, 2});
  WriteShardOfPayloads(dir, ShardFileName(0, 2),
                       {EncodeExample(ExampleFor(0))});
  const absl::Status status = Dataset::Open(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(ShardPath(dir, 0, 2)),
                    HasSubstr("record count 1 but the manifest says 2")));
}

TEST(DatasetTest, VerifyReportsProgressForEveryShard) {
  const std::string dir = WriteDataset({3, 0, 4});
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  std::vector<std::pair<int64_t, int64_t>> progress;
  ASSERT_TRUE((*dataset)
                  ->Verify([&](int64_t shard, int64_t records) {
                    progress.emplace_back(shard, records);
                  })
                  .ok());
  EXPECT_THAT(progress, ElementsAre(std::make_pair(0, 3), std::make_pair(1, 0),
                                    std::make_pair(2, 4)));
  EXPECT_TRUE((*dataset)->Verify().ok());
}

TEST(DatasetTest, CorruptRecordIsNamedByVerifyAndRead) {
  const std::string dir = WriteDataset({2, 3});
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  // Damage a pixel of record 1 of shard 1 (example id 3) after Open.
  const std::string path = ShardPath(dir, 1, 2);
  std::string bytes = ReadFileOrDie(path);
  const int64_t record_size = kShardRecordHeaderSize + 5;
  bytes[kShardHeaderSize + record_size + kShardRecordHeaderSize + 2] ^= 1;
  WriteFileOrDie(path, bytes);

  const absl::Status verify = (*dataset)->Verify();
  EXPECT_EQ(verify.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(verify.message()),
              AllOf(HasSubstr(path), HasSubstr("record 1"),
                    HasSubstr("checksum mismatch")));

  // A reader opened before the damage reads the old file; a fresh dataset
  // reads the damaged one.
  absl::StatusOr<std::unique_ptr<Dataset>> reopened = Dataset::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  const absl::Status read = (*reopened)->Read(3).status();
  EXPECT_EQ(read.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      std::string(read.message()),
      AllOf(HasSubstr("example 3"), HasSubstr(path), HasSubstr("record 1")));
  ExpectExample(**reopened, 2);
}

TEST(DatasetTest, RecordThatDoesNotFitTheSchemaIsNamed) {
  const std::string dir = NewTempDir("dataset");
  Manifest manifest;
  manifest.name = "bad-schema";
  manifest.schema = kSchema;
  manifest.shards.push_back(WriteShardOfPayloads(
      dir, "only.rec",
      {EncodeExample(ExampleFor(0)), std::string("\x01short", 6)}));
  ASSERT_TRUE(WriteManifest(dir, manifest).ok());
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  const absl::Status verify = (*dataset)->Verify();
  EXPECT_EQ(verify.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(verify.message()),
              AllOf(HasSubstr(JoinPath(dir, "only.rec")), HasSubstr("record 1"),
                    HasSubstr("payload is 6 bytes")));
  const absl::Status read = (*dataset)->Read(1).status();
  EXPECT_EQ(read.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(read.message()),
              AllOf(HasSubstr("example 1"), HasSubstr("only.rec: record 1"),
                    HasSubstr("payload is 6 bytes")));
}

TEST(DatasetTest, ConcurrentReadsWithFewOpenShardsAreCorrect) {
  // Seven shards but only two open at a time: readers are evicted and
  // reopened while other threads use them.
  const std::string dir = WriteDataset({5, 5, 5, 5, 5, 5, 5});
  DatasetOptions options;
  options.max_open_shards = 2;
  absl::StatusOr<std::unique_ptr<Dataset>> dataset =
      Dataset::Open(dir, options);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        for (int64_t id = t; id < 35; id += 4) {
          absl::StatusOr<Example> example = (*dataset)->Read(id);
          if (!example.ok() || example->pixels != ExampleFor(id).pixels) {
            ++errors;
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(errors.load(), 0);
}

TEST(DatasetTest, RejectsAnEmptyShardCache) {
  const std::string dir = WriteDataset({1});
  DatasetOptions options;
  options.max_open_shards = 0;
  EXPECT_EQ(Dataset::Open(dir, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace podtrain::dataset
