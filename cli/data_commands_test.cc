#include "cli/data_commands.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace podtrain::cli {
namespace {

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

std::vector<int64_t> ParseIds(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    int64_t id;
    EXPECT_TRUE(absl::SimpleAtoi(line, &id)) << line;
    ids.push_back(id);
  }
  return ids;
}

std::vector<int64_t> Sample(const SampleCommand& command) {
  std::ostringstream out;
  const absl::Status status = RunSample(command, out);
  EXPECT_TRUE(status.ok()) << status;
  return ParseIds(out.str());
}

TEST(SampleCommandTest, PrintsAWholeEpochAsAPermutation) {
  SampleCommand command;
  command.num_examples = 1025;  // 2^10 + 1
  command.num_shards = 7;
  command.window_shards = 2;
  command.seed = 42;
  command.epoch = 3;
  std::vector<int64_t> ids = Sample(command);
  ASSERT_EQ(ids.size(), 1025u);
  std::sort(ids.begin(), ids.end());
  for (int64_t i = 0; i < 1025; ++i) ASSERT_EQ(ids[i], i);
}

TEST(SampleCommandTest, StartAndCountSelectAPartOfTheEpoch) {
  SampleCommand command;
  command.num_examples = 500;
  command.seed = 1;
  const std::vector<int64_t> all = Sample(command);
  command.start = 100;
  command.count = 50;
  const std::vector<int64_t> part = Sample(command);
  EXPECT_EQ(part, std::vector<int64_t>(all.begin() + 100, all.begin() + 150));
}

TEST(SampleCommandTest, RanksOfAStepConcatenateToTheStep) {
  SampleCommand command;
  command.num_examples = 1000;
  command.num_shards = 10;
  command.window_shards = 3;
  command.seed = 9;
  command.epoch = 2;
  const std::vector<int64_t> epoch2 = Sample(command);
  // Step 21 of B=100 is positions [2100, 2200): epoch 2, offsets 100..199.
  std::vector<int64_t> step;
  for (int64_t rank = 0; rank < 3; ++rank) {
    SampleCommand step_command = command;
    step_command.global_batch = 100;
    step_command.step = 21;
    step_command.world = 3;
    step_command.rank = rank;
    const std::vector<int64_t> ids = Sample(step_command);
    EXPECT_EQ(ids.size(), rank == 2 ? 34u : 33u);
    step.insert(step.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(step,
            std::vector<int64_t>(epoch2.begin() + 100, epoch2.begin() + 200));
}

absl::Status SampleError(SampleCommand command) {
  std::ostringstream out;
  return RunSample(command, out);
}

TEST(SampleCommandTest, BadInputNamesTheFlag) {
  SampleCommand empty;
  empty.num_examples = 0;
  EXPECT_NE(SampleError(empty).message().find("--examples"), std::string::npos);

  SampleCommand no_shape;
  EXPECT_NE(SampleError(no_shape).message().find("--dataset DIR or --examples"),
            std::string::npos);

  SampleCommand window;
  window.num_examples = 10;
  window.window_shards = -1;
  EXPECT_NE(SampleError(window).message().find("--window"), std::string::npos);

  SampleCommand world;
  world.num_examples = 10;
  world.global_batch = 4;
  world.world = 5;
  EXPECT_NE(SampleError(world).message().find("world"), std::string::npos);

  SampleCommand rank = world;
  rank.world = 2;
  rank.rank = 2;
  EXPECT_NE(SampleError(rank).message().find("rank"), std::string::npos);

  SampleCommand count;
  count.num_examples = 10;
  count.start = 5;
  count.count = 6;
  EXPECT_NE(SampleError(count).message().find("--count"), std::string::npos);

  SampleCommand unknown;
  unknown.dataset_dir = TempDir("no-such-dataset");
  const absl::Status status = SampleError(unknown);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find("no-such-dataset"), std::string::npos);
}

TEST(SynthCommandTest, JftScaleManifestInspectsAndSamples) {
  const std::string dir = TempDir("jft");
  SynthCommand synth;
  synth.out_dir = dir;
  synth.name = "jft-like";
  synth.num_examples = 4'000'000'000;
  synth.num_shards = 40'000;
  std::ostringstream out;
  ASSERT_TRUE(RunSynth(synth, out).ok());

  std::ostringstream report;
  ASSERT_TRUE(RunInspect(dir, report).ok());
  EXPECT_NE(report.str().find("examples:     4000000000"), std::string::npos)
      << report.str();
  EXPECT_NE(report.str().find("shards:       40000"), std::string::npos);

  SampleCommand sample;
  sample.dataset_dir = dir;
  sample.window_shards = 16;
  sample.seed = 7;
  sample.epoch = 1;
  sample.start = 3'999'999'990;
  const std::vector<int64_t> tail = Sample(sample);
  ASSERT_EQ(tail.size(), 10u);
  for (int64_t id : tail) EXPECT_LT(id, 4'000'000'000);
}

TEST(IngestCommandTest, FashionMnistIngestsVerifiesAndCatchesCorruption) {
  const std::string dir = TempDir("fmnist");
  IngestCommand ingest;
  ingest.dataset = "fashion-mnist";
  ingest.out_dir = dir;
  ingest.num_shards = 3;
  std::ostringstream out;
  const absl::Status ingested = RunIngest(ingest, out);
  ASSERT_TRUE(ingested.ok()) << ingested;

  std::ostringstream verified;
  ASSERT_TRUE(RunVerify(dir + "/train", verified).ok());
  EXPECT_NE(verified.str().find("60000 examples in 3 shards"),
            std::string::npos)
      << verified.str();

  // Flip one byte in the middle of the second shard's records.
  const std::string shard = dir + "/test/shard-00001-of-00003.rec";
  std::fstream file(shard, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file.is_open()) << shard;
  file.seekg(5000);
  char byte;
  file.read(&byte, 1);
  file.seekp(5000);
  byte ^= 0x5a;
  file.write(&byte, 1);
  file.close();

  std::ostringstream ignored;
  const absl::Status corrupt = RunVerify(dir + "/test", ignored);
  EXPECT_EQ(corrupt.code(), absl::StatusCode::kDataLoss) << corrupt;
  EXPECT_NE(corrupt.message().find("shard-00001-of-00003.rec"),
            std::string::npos)
      << corrupt;
  EXPECT_NE(corrupt.message().find("record"), std::string::npos) << corrupt;
}

TEST(IngestCommandTest, UnknownDatasetAndMissingOutAreClearErrors) {
  std::ostringstream out;
  IngestCommand unknown;
  unknown.dataset = "imagenet";
  unknown.out_dir = TempDir("x");
  EXPECT_NE(
      RunIngest(unknown, out).message().find("unknown dataset 'imagenet'"),
      std::string::npos);
  IngestCommand no_out;
  no_out.dataset = "fashion-mnist";
  EXPECT_NE(RunIngest(no_out, out).message().find("--out"), std::string::npos);
  EXPECT_EQ(RunVerify(TempDir("nothing-here"), out).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace podtrain::cli
