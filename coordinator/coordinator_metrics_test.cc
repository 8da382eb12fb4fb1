// CoordinatorMetrics through its text exposition: what Prometheus scrapes.

#include "coordinator/coordinator_metrics.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/metrics.h"

namespace podtrain::coordinator {
namespace {

class CoordinatorMetricsTest : public ::testing::Test {
 protected:
  std::string Text() const { return SerializeMetrics(*metrics_.registry()); }
  bool Has(const std::string& line) const {
    return Text().find(line + "\n") != std::string::npos;
  }

  CoordinatorMetrics metrics_{std::make_shared<prometheus::Registry>()};
};

TEST_F(CoordinatorMetricsTest, JobProgressBecomesPerJobSeries) {
  JobProgress progress;
  progress.committed_step = 99;
  progress.step = 117;
  progress.epoch = 0.5;
  progress.world_size = 2;
  progress.generation = 3;
  progress.lookahead_steps = 16;
  progress.restarts = 2;
  progress.restarts_remaining = 48;
  progress.checkpoint_interval_steps = 100;
  progress.lineage_time = absl::FromUnixSeconds(1'700'000'000);
  metrics_.SetJobProgress("jobs/000001", progress);

  const std::string job = "{job_name=\"jobs/000001\"} ";
  EXPECT_TRUE(Has("podtrain_job_committed_step" + job + "99")) << Text();
  EXPECT_TRUE(Has("podtrain_job_step" + job + "117"));
  EXPECT_TRUE(Has("podtrain_job_epoch" + job + "0.5"));
  EXPECT_TRUE(Has("podtrain_job_world_size" + job + "2"));
  EXPECT_TRUE(Has("podtrain_job_generation" + job + "3"));
  EXPECT_TRUE(Has("podtrain_job_assignment_lookahead_steps" + job + "16"));
  EXPECT_TRUE(Has("podtrain_job_restarts" + job + "2"));
  EXPECT_TRUE(Has("podtrain_job_restarts_remaining" + job + "48"));
  EXPECT_TRUE(Has("podtrain_job_checkpoint_interval_steps" + job + "100"));
  EXPECT_TRUE(Has("podtrain_job_last_checkpoint_timestamp_seconds" + job +
                  "1700000000"));
  // The examples counter exists from the start, so rate() sees its first
  // increase.
  EXPECT_TRUE(Has("podtrain_job_examples_total" + job + "0"));
  EXPECT_TRUE(Has("# TYPE podtrain_job_examples_total counter"));
  EXPECT_TRUE(Has("# TYPE podtrain_job_restarts_remaining gauge"));
}

TEST_F(CoordinatorMetricsTest, NoLineageTimeBeforeTheFirstWorld) {
  JobProgress progress;  // lineage_time unset: the job never had a world
  metrics_.SetJobProgress("jobs/000001", progress);
  EXPECT_TRUE(Has("podtrain_job_step{job_name=\"jobs/000001\"} -1")) << Text();
  EXPECT_EQ(Text().find("podtrain_job_last_checkpoint_timestamp_seconds{"),
            std::string::npos)
      << Text();
}

TEST_F(CoordinatorMetricsTest, JobExamplesCountPerJob) {
  metrics_.CountJobExamples("jobs/000001", 128);
  metrics_.CountJobExamples("jobs/000001", 128);
  metrics_.CountJobExamples("jobs/000002", 64);
  metrics_.CountJobExamples("jobs/000002", 0);
  metrics_.CountJobExamples("jobs/000002", -5);  // ignored
  EXPECT_TRUE(Has("podtrain_job_examples_total{job_name=\"jobs/000001\"} 256"))
      << Text();
  EXPECT_TRUE(Has("podtrain_job_examples_total{job_name=\"jobs/000002\"} 64"))
      << Text();
}

TEST_F(CoordinatorMetricsTest, RemoveJobRemovesEveryPerJobSeries) {
  JobProgress progress;
  progress.lineage_time = absl::FromUnixSeconds(1);
  metrics_.SetJobProgress("jobs/000001", progress);
  metrics_.SetJobProgress("jobs/000002", progress);
  metrics_.CountJobExamples("jobs/000001", 10);
  metrics_.RemoveJob("jobs/000001");
  EXPECT_EQ(Text().find("jobs/000001"), std::string::npos) << Text();
  EXPECT_TRUE(Has("podtrain_job_restarts{job_name=\"jobs/000002\"} 0"));
  EXPECT_TRUE(Has("podtrain_job_examples_total{job_name=\"jobs/000002\"} 0"));
  // Removing a job that has no series is harmless.
  metrics_.RemoveJob("jobs/000009");
  EXPECT_EQ(Text().find("jobs/000009"), std::string::npos);
}

}  // namespace
}  // namespace podtrain::coordinator
