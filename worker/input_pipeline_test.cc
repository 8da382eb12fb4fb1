#include "worker/input_pipeline.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>

#include "absl/time/clock.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"

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
      data.get(),
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
      data.get(),
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
        data.get(),
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
        data.get(),
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

TEST(InputPipelineTest, CancelUnblocksTheConsumer) {
  auto data = SyntheticDataset();
  std::atomic<bool> release{false};
  InputPipeline pipeline(
      data.get(),
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
