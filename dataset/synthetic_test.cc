#include "dataset/synthetic.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "dataset/dataset.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/test_util.h"

namespace podtrain::dataset {
namespace {

using ::podtrain::dataset::testing::NewTempDir;
using ::testing::HasSubstr;

constexpr Schema kSchema{8, 8, 3, 100};
constexpr int64_t kJftExamples = 4'000'000'000;
constexpr int64_t kJftShards = 40'000;

TEST(SyntheticTest, ShardSizesDifferByAtMostOne) {
  const Manifest manifest = MakeSyntheticManifest("s", 10, 4, kSchema);
  EXPECT_TRUE(manifest.synthetic);
  EXPECT_EQ(manifest.num_examples(), 10);
  EXPECT_THAT(manifest.ShardSizes(), ::testing::ElementsAre(3, 3, 2, 2));
  for (const ShardInfo& shard : manifest.shards) {
    EXPECT_EQ(shard.path, "");
    EXPECT_EQ(shard.bytes, 0);
  }
}

TEST(SyntheticTest, ExamplesAreDeterministicAndFitTheSchema) {
  const Schema odd_size{3, 5, 1, 7};  // 15 pixels: not a multiple of 8
  for (const int64_t id : {int64_t{0}, int64_t{1}, int64_t{123456789}}) {
    const Example a = MakeSyntheticExample(id, odd_size);
    const Example b = MakeSyntheticExample(id, odd_size);
    EXPECT_EQ(a.label, b.label);
    EXPECT_EQ(a.pixels, b.pixels);
    EXPECT_GE(a.label, 0);
    EXPECT_LT(a.label, 7);
    EXPECT_EQ(a.pixels.size(), 15u);
  }
}

TEST(SyntheticTest, ExamplesAreDistinctAndLabelsCoverTheClasses) {
  std::set<std::string> pixels;
  std::set<int32_t> labels;
  for (int64_t id = 0; id < 1000; ++id) {
    const Example example = MakeSyntheticExample(id, Schema{4, 4, 1, 10});
    pixels.insert(example.pixels);
    labels.insert(example.label);
  }
  EXPECT_EQ(pixels.size(), 1000u);
  EXPECT_EQ(labels.size(), 10u);
}

TEST(SyntheticTest, GeneratorIsPinned) {
  // Workers on different machines must generate the same bytes for an id;
  // these values (computed independently in Python) pin the generator.
  const Example example = MakeSyntheticExample(42, Schema{1, 4, 1, 10});
  EXPECT_EQ(example.label, 3);
  EXPECT_EQ(example.pixels, std::string("\xee\x12\x4d\x04", 4));
}

TEST(SyntheticTest, InvalidSpecsAreRejectedWithReasons) {
  EXPECT_TRUE(ValidateSyntheticSpec("ok", 0, 1, kSchema).ok());
  const std::vector<std::pair<absl::Status, std::string>> cases = {
      {ValidateSyntheticSpec("s", -1, 1, kSchema), "num_examples >= 0"},
      {ValidateSyntheticSpec("s", 10, 0, kSchema), "num_shards"},
      {ValidateSyntheticSpec("s", 10, kMaxSyntheticShards + 1, kSchema),
       "num_shards"},
      {ValidateSyntheticSpec("", 10, 1, kSchema), "name is empty"},
      {ValidateSyntheticSpec("s", 10, 1, Schema{8, 8, 0, 10}), "channels"},
  };
  for (const auto& [status, error] : cases) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << error;
    EXPECT_THAT(std::string(status.message()), HasSubstr(error));
  }
}

class JftScaleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto start = std::chrono::steady_clock::now();
    manifest_ = new Manifest(
        MakeSyntheticManifest("jft-4b", kJftExamples, kJftShards, kSchema));
    make_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    dir_ = new std::string(NewTempDir("jft"));
    const absl::Status status = WriteManifest(*dir_, *manifest_);
    ASSERT_TRUE(status.ok()) << status;
  }
  static void TearDownTestSuite() {
    delete manifest_;
    delete dir_;
  }

  static Manifest* manifest_;
  static std::string* dir_;
  static double make_seconds_;
};

Manifest* JftScaleTest::manifest_ = nullptr;
std::string* JftScaleTest::dir_ = nullptr;
double JftScaleTest::make_seconds_ = 0;

TEST_F(JftScaleTest, IsCreatedQuicklyWithTheRightShape) {
  // O(num_shards): milliseconds in practice; the bound only catches an
  // accidental O(num_examples).
  EXPECT_LT(make_seconds_, 2.0);
  EXPECT_EQ(manifest_->num_examples(), kJftExamples);
  ASSERT_EQ(manifest_->shards.size(), static_cast<size_t>(kJftShards));
  for (const ShardInfo& shard : manifest_->shards) {
    ASSERT_EQ(shard.records, kJftExamples / kJftShards);
  }
}

TEST_F(JftScaleTest, RoundTripsThroughTheManifestFile) {
  absl::StatusOr<Manifest> read = ReadManifest(*dir_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == *manifest_);
  EXPECT_EQ(read->num_examples(), kJftExamples);
  EXPECT_EQ(read->Fingerprint(), manifest_->Fingerprint());
}

TEST_F(JftScaleTest, ReadsNearEveryBoundaryAreDeterministic) {
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(*dir_);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<std::unique_ptr<Dataset>> other = Dataset::Open(*dir_);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ((*dataset)->num_examples(), kJftExamples);

  // 4e9 < 2^32, so the ids near 2^32 that exist here are the last ones; ids
  // past 2^32 are covered by IdsAbove2To32AreReadable below.
  constexpr int64_t k2To31 = int64_t{1} << 31;
  const std::vector<int64_t> ids = {
      0, 1, k2To31 - 1, k2To31, k2To31 + 1, kJftExamples - 2, kJftExamples - 1};
  for (const int64_t id : ids) {
    absl::StatusOr<Example> a = (*dataset)->Read(id);
    absl::StatusOr<Example> b = (*other)->Read(id);
    ASSERT_TRUE(a.ok()) << id << ": " << a.status();
    ASSERT_TRUE(b.ok()) << id << ": " << b.status();
    EXPECT_EQ(a->label, b->label) << id;
    EXPECT_EQ(a->pixels, b->pixels) << id;
    EXPECT_EQ(a->pixels, MakeSyntheticExample(id, kSchema).pixels) << id;
    EXPECT_LT(a->label, kSchema.num_classes);
    EXPECT_EQ(a->pixels.size(), 8u * 8 * 3);
  }
  // Ids that would alias a small id if truncated to 32 bits differ from it.
  EXPECT_NE((*dataset)->Read(k2To31 + 5)->pixels, (*dataset)->Read(5)->pixels);
}

TEST(SyntheticTest, IdsAbove2To32AreReadable) {
  constexpr int64_t k2To32 = int64_t{1} << 32;
  const std::string dir = NewTempDir("above-2-32");
  ASSERT_TRUE(WriteManifest(dir, MakeSyntheticManifest("5b", 5'000'000'000,
                                                       1000, kSchema))
                  .ok());
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  for (const int64_t id : {k2To32 - 1, k2To32, k2To32 + 1}) {
    absl::StatusOr<Example> a = (*dataset)->Read(id);
    ASSERT_TRUE(a.ok()) << id << ": " << a.status();
    EXPECT_EQ(a->pixels, (*dataset)->Read(id)->pixels) << id;
    // Not the example of the id's low 32 bits.
    if (id >= k2To32) {
      EXPECT_NE(a->pixels, (*dataset)->Read(id - k2To32)->pixels) << id;
    }
    absl::StatusOr<ExampleLocation> location = (*dataset)->Locate(id);
    ASSERT_TRUE(location.ok()) << location.status();
    EXPECT_EQ(location->shard, id / 5'000'000);
    EXPECT_EQ(location->record, id % 5'000'000);
  }
}

TEST_F(JftScaleTest, LocatesIdsInTheRightShard) {
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(*dir_);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  constexpr int64_t kPerShard = kJftExamples / kJftShards;  // 100,000
  for (const int64_t id : {int64_t{0}, kPerShard - 1, kPerShard,
                           (int64_t{1} << 31) + 7, kJftExamples - 1}) {
    absl::StatusOr<ExampleLocation> location = (*dataset)->Locate(id);
    ASSERT_TRUE(location.ok()) << location.status();
    EXPECT_EQ(location->shard, id / kPerShard) << id;
    EXPECT_EQ(location->record, id % kPerShard) << id;
  }
}

TEST_F(JftScaleTest, OutOfRangeIdsAreOutOfRange) {
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(*dir_);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  for (const int64_t id : {kJftExamples, (int64_t{1} << 32) - 1,
                           int64_t{1} << 32, int64_t{-1}, int64_t{1} << 62}) {
    EXPECT_EQ((*dataset)->Read(id).status().code(),
              absl::StatusCode::kOutOfRange)
        << id;
  }
}

TEST_F(JftScaleTest, VerifyChecksEveryShardWithoutData) {
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(*dir_);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  int64_t shards = 0;
  int64_t records = 0;
  ASSERT_TRUE((*dataset)
                  ->Verify([&](int64_t, int64_t shard_records) {
                    ++shards;
                    records += shard_records;
                  })
                  .ok());
  EXPECT_EQ(shards, kJftShards);
  EXPECT_EQ(records, kJftExamples);
}

TEST(SyntheticTest, VerifyCatchesAShardThatDoesNotMatchTheGenerator) {
  Manifest manifest = MakeSyntheticManifest("s", 10, 2, kSchema);
  // Move one example between shards: a valid manifest, but shard 1 no longer
  // holds what its digest says.
  manifest.shards[0].records = 6;
  manifest.shards[1].records = 4;
  const std::string dir = NewTempDir("synthetic");
  ASSERT_TRUE(WriteManifest(dir, manifest).ok());
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = Dataset::Open(dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const absl::Status status = (*dataset)->Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("synthetic shard 0"));
}

}  // namespace
}  // namespace podtrain::dataset
