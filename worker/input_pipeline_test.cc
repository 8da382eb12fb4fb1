#include "worker/input_pipeline.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>

#include "absl/time/clock.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"

namespace podtrain::worker {
namespace {

std::unique_ptr<dataset::Dataset> SyntheticDataset() {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(base ? base : "/tmp") + "/pipeline";
  dataset::Schema schema;
  schema.height = 28;
  schema.width = 28;
  schema.channels = 1;
  schema.num_classes = 10;
  EXPECT_TRUE(dataset::CreateDirectories(dir).ok());
  EXPECT_TRUE(dataset::WriteManifest(
                  dir, dataset::MakeSyntheticManifest("p", 500, 5, schema))
                  .ok());
  return *dataset::Dataset::Open(dir);
}

v1::StepAssignment Assignment(int64_t step, std::vector<int64_t> ids) {
  v1::StepAssignment assignment;
  assignment.set_step(step);
  assignment.mutable_example_ids()->Add(ids.begin(), ids.end());
  return assignment;
}

TEST(InputPipelineTest, DecodesAssignmentsInOrderThenEnds) {
  auto data = SyntheticDataset();
  std::vector<v1::StepAssignment> script = {
      Assignment(0, {3, 499, 0}), Assignment(1, {7}), Assignment(2, {42, 43})};
  size_t next = 0;
  InputPipeline pipeline(
      data.get(), nullptr,
      [&]() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
        if (next == script.size()) return std::nullopt;
        return script[next++];
      },
      2);
  for (int64_t step = 0; step < 3; ++step) {
    absl::Duration waited;
    auto batch = pipeline.Next(&waited);
    ASSERT_TRUE(batch.ok()) << batch.status();
    EXPECT_EQ(batch->step, step);
    ASSERT_EQ(batch->images.size(0), script[step].example_ids_size());
    EXPECT_EQ(
        batch->images.sizes(),
        (std::vector<int64_t>{script[step].example_ids_size(), 1, 28, 28}));
    for (int k = 0; k < script[step].example_ids_size(); ++k) {
      const auto example = *data->Read(script[step].example_ids(k));
      EXPECT_EQ(batch->labels[k].item<int64_t>(), example.label);
      // Pixels scaled to [0, 1], in order.
      const float* image = batch->images[k].data_ptr<float>();
      for (int p : {0, 100, 783}) {
        EXPECT_FLOAT_EQ(image[p],
                        static_cast<unsigned char>(example.pixels[p]) / 255.0f);
      }
    }
  }
  absl::Duration waited;
  EXPECT_EQ(pipeline.Next(&waited).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST(InputPipelineTest, ReadsAheadOnlyUpToItsDepth) {
  auto data = SyntheticDataset();
  std::atomic<int> pulled{0};
  InputPipeline pipeline(
      data.get(), nullptr,
      [&]() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
        const int step = pulled++;
        return Assignment(step, {step});
      },
      3);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (pulled < 3 && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(50));
  // 3 decoded and waiting, plus at most the one being pulled.
  EXPECT_LE(pulled.load(), 4);
  EXPECT_GE(pulled.load(), 3);
  absl::Duration waited;
  EXPECT_EQ(pipeline.Next(&waited)->step, 0);
}

TEST(InputPipelineTest, SourceErrorsAndBadIdsReachTheConsumer) {
  auto data = SyntheticDataset();
  {
    InputPipeline pipeline(
        data.get(), nullptr,
        []() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
          return absl::AbortedError("generation 3 is ending");
        },
        2);
    absl::Duration waited;
    auto batch = pipeline.Next(&waited);
    EXPECT_EQ(batch.status().code(), absl::StatusCode::kAborted);
  }
  {
    bool sent = false;
    InputPipeline pipeline(
        data.get(), nullptr,
        [&]() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
          if (sent) return std::nullopt;
          sent = true;
          return Assignment(9, {500});  // out of range
        },
        2);
    absl::Duration waited;
    auto batch = pipeline.Next(&waited);
    EXPECT_EQ(batch.status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_NE(batch.status().message().find("step 9"), std::string::npos)
        << batch.status();
  }
}

v1::StepAssignment PositionsAssignment(int64_t step, int64_t begin,
                                       int64_t end) {
  v1::StepAssignment assignment;
  assignment.set_step(step);
  assignment.mutable_positions()->set_begin(begin);
  assignment.mutable_positions()->set_end(end);
  return assignment;
}

// A stream of positions decodes the same examples as the stream of ids the
// coordinator would have sent for the same rank and step.
TEST(InputPipelineTest, PositionsDecodeTheIdsTheSamplerMapsThemTo) {
  auto data = SyntheticDataset();
  auto sampler = *sampler::StreamSampler::Create(data->manifest().ShardSizes(),
                                                 {.seed = 11});
  // Rank 1 of 3 at global batch 100; step 5 straddles the epoch boundary
  // (positions 500-599 of a 500-example dataset are epoch 1).
  std::vector<v1::StepAssignment> script;
  std::vector<std::vector<int64_t>> expected;
  for (int64_t step : {0, 4, 5}) {
    const auto range = *sampler::RankPositions(100, step, 3, 1);
    script.push_back(PositionsAssignment(step, range.begin, range.end));
    expected.push_back(*sampler::RankExampleIds(*sampler, 100, step, 3, 1));
  }
  size_t next = 0;
  InputPipeline pipeline(
      data.get(), sampler.get(),
      [&]() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
        if (next == script.size()) return std::nullopt;
        return script[next++];
      },
      2);
  for (size_t i = 0; i < script.size(); ++i) {
    absl::Duration waited;
    auto batch = pipeline.Next(&waited);
    ASSERT_TRUE(batch.ok()) << batch.status();
    EXPECT_EQ(batch->step, script[i].step());
    EXPECT_EQ(batch->ids, expected[i]);
    ASSERT_EQ(batch->labels.size(0), static_cast<int64_t>(expected[i].size()));
    EXPECT_EQ(batch->labels[0].item<int64_t>(),
              data->Read(expected[i][0])->label);
  }
}

TEST(InputPipelineTest, MalformedPositionsAreRefusedNamingTheStep) {
  auto sampler =
      *sampler::StreamSampler::Create(std::vector<int64_t>{500}, {.seed = 1});
  const auto refused = [&](const v1::StepAssignment& assignment,
                           const sampler::StreamSampler* with) {
    auto ids = AssignedExampleIds(assignment, with);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(ids.status().message().find("step 3"), std::string::npos)
        << ids.status();
    return ids.status().message();
  };
  EXPECT_THAT(std::string(refused(PositionsAssignment(3, 10, 20), nullptr)),
              testing::HasSubstr("no sampler"));
  EXPECT_THAT(
      std::string(refused(PositionsAssignment(3, 20, 10), sampler.get())),
      testing::HasSubstr("not a range"));
  EXPECT_THAT(
      std::string(refused(PositionsAssignment(3, -1, 10), sampler.get())),
      testing::HasSubstr("not a range"));
  EXPECT_THAT(
      std::string(refused(PositionsAssignment(3, 0, kMaxAssignedExamples + 1),
                          sampler.get())),
      testing::HasSubstr("more than"));
  v1::StepAssignment both = PositionsAssignment(3, 0, 2);
  both.add_example_ids(4);
  EXPECT_THAT(std::string(refused(both, sampler.get())),
              testing::HasSubstr("one or the other"));
  // An empty range is a rank with no examples this step, not an error.
  auto empty = AssignedExampleIds(PositionsAssignment(3, 7, 7), sampler.get());
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
}

TEST(InputPipelineTest, CancelUnblocksTheConsumer) {
  auto data = SyntheticDataset();
  std::atomic<bool> release{false};
  InputPipeline pipeline(
      data.get(), nullptr,
      [&]() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
        while (!release) absl::SleepFor(absl::Milliseconds(1));
        return std::nullopt;
      },
      2);
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(20));
    pipeline.Cancel();
    release = true;  // what cancelling the gRPC stream does to the source
  });
  absl::Duration waited;
  EXPECT_EQ(pipeline.Next(&waited).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_GE(waited, absl::Milliseconds(15));
  canceller.join();
}

}  // namespace
}  // namespace podtrain::worker
