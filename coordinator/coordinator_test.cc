// The coordinator's logic with fake workers calling it directly, on a fake
// clock: admission, rendezvous, leases, assignments, commits, preemption,
// restart budget, recovery from the journal. No sleeps: blocking calls are
// given deadlines that have already passed (they register the call and
// return DEADLINE_EXCEEDED), and time moves only through the FakeClock.

#include "coordinator/coordinator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"

namespace podtrain::coordinator {
namespace {

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

// A dataset of 1000 examples in 10 shards, on disk as a manifest.
std::string MakeDataset(const std::string& name) {
  const std::string dir = TempDir(name);
  dataset::Schema schema;
  schema.height = 28;
  schema.width = 28;
  schema.channels = 1;
  schema.num_classes = 10;
  EXPECT_TRUE(dataset::CreateDirectories(dir).ok());
  auto status = dataset::WriteManifest(
      dir, dataset::MakeSyntheticManifest(name, 1000, 10, schema));
  EXPECT_TRUE(status.ok()) << status;
  return dir;
}

v1::JobSpec Spec(const std::string& dataset_dir, int min_workers,
                 int max_workers) {
  v1::JobSpec spec;
  spec.set_dataset(dataset_dir);
  spec.mutable_model()->set_name("mlp");
  spec.mutable_model()->add_hidden(32);
  spec.mutable_optimizer()->mutable_sgd()->set_momentum(0.9);
  spec.mutable_schedule()->set_base_learning_rate(0.05);
  spec.set_global_batch(100);
  spec.set_steps(50);
  spec.set_seed(7);
  spec.set_min_workers(min_workers);
  spec.set_max_workers(max_workers);
  spec.set_shuffle_window_shards(2);
  spec.mutable_checkpoint()->set_directory(TempDir("ckpt"));
  spec.mutable_checkpoint()->set_interval_steps(10);
  spec.set_restart_budget(3);
  return spec;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    journal_ = TempDir(
        std::string(
            ::testing::UnitTest::GetInstance()->current_test_info()->name()) +
        ".journal");
    std::remove(journal_.c_str());
    dataset_ = MakeDataset("data");
    Restart();
  }

  // A new coordinator on the same journal (a kill -9 and restart).
  void Restart() {
    coordinator_.reset();
    CoordinatorOptions options;
    options.journal_path = journal_;
    options.max_pool_workers = 8;
    options.max_reports_per_step = max_reports_per_step_;
    options.max_assignment_messages_per_step = max_messages_per_step_;
    options.assignment_lookahead_steps = assignment_lookahead_steps_;
    auto coordinator = Coordinator::Create(options, &clock_);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = std::move(*coordinator);
  }

  std::string CreateJob(int min_workers, int max_workers,
                        const std::string& request_id = "") {
    v1::CreateJobRequest request;
    *request.mutable_spec() = Spec(dataset_, min_workers, max_workers);
    request.set_request_id(request_id);
    auto job = coordinator_->CreateJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->name() : "";
  }

  void Register(const std::string& worker, uint64_t incarnation) {
    v1::RegisterRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(incarnation);
    ASSERT_TRUE(coordinator_->Register(request).ok());
  }

  // JoinGeneration without blocking: returns the response, or the error
  // (DEADLINE_EXCEEDED while the world has not formed).
  absl::StatusOr<v1::JoinGenerationResponse> Join(const std::string& worker,
                                                  uint64_t incarnation,
                                                  int64_t after = 0) {
    v1::JoinGenerationRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(incarnation);
    request.set_after_generation(after);
    return coordinator_->JoinGeneration(request, clock_.Now());
  }

  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(
      const std::string& worker, uint64_t incarnation, int64_t generation,
      bool preempting = false, const std::string& error = "") {
    v1::HeartbeatRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(incarnation);
    request.set_generation(generation);
    request.set_preempting(preempting);
    request.set_collective_error(error);
    return coordinator_->Heartbeat(request);
  }

  absl::StatusOr<v1::CommitCheckpointResponse> CommitAt(
      const std::string& worker, uint64_t incarnation, int64_t generation,
      int64_t step) {
    v1::CommitCheckpointRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(incarnation);
    request.set_generation(generation);
    request.set_step(step);
    request.set_path("/ckpt/step-" + std::to_string(step));
    return coordinator_->CommitCheckpoint(request);
  }

  v1::Job Job(const std::string& name) { return *coordinator_->GetJob(name); }

  // A request for generation 1's assignments from `from` on.
  static v1::StreamAssignmentsRequest StreamRequest(const std::string& worker,
                                                    uint64_t incarnation,
                                                    int64_t from) {
    v1::StreamAssignmentsRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(incarnation);
    request.set_generation(1);
    request.set_from_step(from);
    return request;
  }

  // Two workers form generation 1 of a min=max=2 job.
  std::string StartTwoWorkerJob() {
    const std::string job = CreateJob(2, 2);
    Register("w0", 100);
    Register("w1", 200);
    EXPECT_EQ(Join("w0", 100).status().code(),
              absl::StatusCode::kDeadlineExceeded);
    auto second = Join("w1", 200);
    EXPECT_TRUE(second.ok()) << second.status();
    auto first = Join("w0", 100);
    EXPECT_TRUE(first.ok()) << first.status();
    return job;
  }

  FakeClock clock_{absl::FromUnixSeconds(1'000'000)};
  int32_t max_reports_per_step_ = 128;
  int32_t max_messages_per_step_ = 64;
  int64_t assignment_lookahead_steps_ = 16;
  std::string journal_;
  std::string dataset_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, CreateJobIsIdempotentByRequestId) {
  const std::string first = CreateJob(1, 1, "req-a");
  const std::string replay = CreateJob(1, 1, "req-a");
  const std::string other = CreateJob(1, 1, "req-b");
  EXPECT_EQ(first, "jobs/000001");
  EXPECT_EQ(replay, first);
  EXPECT_EQ(other, "jobs/000002");
  EXPECT_EQ(Job(first).state(), v1::QUEUED);
}

TEST_F(CoordinatorTest, BadJobsAreRefusedWithTheRightCode) {
  v1::CreateJobRequest request;
  *request.mutable_spec() = Spec(TempDir("no-such-dataset"), 1, 1);
  auto missing = coordinator_->CreateJob(request);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("spec.dataset"), std::string::npos)
      << missing.status();

  *request.mutable_spec() = Spec(dataset_, 1, 1);
  request.mutable_spec()->set_global_batch(0);
  auto bad = coordinator_->CreateJob(request);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("global_batch"), std::string::npos);

  *request.mutable_spec() = Spec(dataset_, 9, 9);  // the pool holds 8
  EXPECT_EQ(coordinator_->CreateJob(request).status().code(),
            absl::StatusCode::kResourceExhausted);

  *request.mutable_spec() = Spec(dataset_, 1, 1);
  request.mutable_spec()->set_shuffle_window_shards(-2);
  auto window = coordinator_->CreateJob(request);
  EXPECT_NE(window.status().message().find("shuffle_window_shards"),
            std::string::npos);

  EXPECT_EQ(coordinator_->GetJob("jobs/999").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, ListJobsPagesNewestFirst) {
  for (int i = 0; i < 5; ++i) CreateJob(1, 1);
  v1::ListJobsRequest request;
  request.set_page_size(2);
  std::vector<std::string> names;
  do {
    auto page = coordinator_->ListJobs(request);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& job : page->jobs()) names.push_back(job.name());
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  EXPECT_EQ(names, (std::vector<std::string>{"jobs/000005", "jobs/000004",
                                             "jobs/000003", "jobs/000002",
                                             "jobs/000001"}));
  request.set_page_size(-1);
  EXPECT_EQ(coordinator_->ListJobs(request).status().code(),
            absl::StatusCode::kInvalidArgument);
  request.set_page_size(1);
  request.set_page_token("garbage");
  EXPECT_EQ(coordinator_->ListJobs(request).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CoordinatorTest, CancelTwiceIsAFailedPrecondition) {
  const std::string job = CreateJob(1, 1);
  auto cancelled = coordinator_->CancelJob(job);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  EXPECT_EQ(coordinator_->CancelJob(job).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, GangAdmissionWaitsForMinWorkers) {
  const std::string job = CreateJob(2, 2);
  Register("w0", 100);
  EXPECT_EQ(Join("w0", 100).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  clock_.Advance(absl::Seconds(2));
  coordinator_->Tick();
  EXPECT_EQ(Job(job).state(), v1::QUEUED);  // one worker is not a gang of 2
  Register("w1", 200);
  auto joined = Join("w1", 200);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->world_size(), 2);
  EXPECT_EQ(joined->generation(), 1);
  EXPECT_EQ(joined->resume_step(), -1);
  EXPECT_EQ(joined->total_steps(), 50);
  auto first = Join("w0", 100);
  ASSERT_TRUE(first.ok());
  EXPECT_NE(first->rank(), joined->rank());
  EXPECT_EQ(Job(job).state(), v1::RUNNING);
}

TEST_F(CoordinatorTest, FirstWorldWaitsTheLastCallForMaxWorkers) {
  const std::string job = CreateJob(1, 3);
  Register("w0", 100);
  EXPECT_FALSE(Join("w0", 100).ok());  // min reached, last call running
  Register("w1", 200);
  EXPECT_FALSE(Join("w1", 200).ok());
  clock_.Advance(absl::Seconds(1));
  coordinator_->Tick();
  auto joined = Join("w0", 100);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->world_size(), 2);
}

TEST_F(CoordinatorTest, AssignmentsAreWhatTheSamplerComputes) {
  const std::string job = StartTwoWorkerJob();
  auto sampler = *sampler::StreamSampler::Create(
      std::vector<int64_t>(10, 100), {.seed = 7, .window_shards = 2});
  for (const auto& [worker, incarnation] :
       std::vector<std::pair<std::string, uint64_t>>{{"w0", 100},
                                                     {"w1", 200}}) {
    auto membership = Join(worker, incarnation);
    v1::StreamAssignmentsRequest request =
        StreamRequest(worker, incarnation, 0);
    auto assignments =
        coordinator_->NextAssignments(request, 100, clock_.Now());
    ASSERT_TRUE(assignments.ok()) << assignments.status();
    // Bounded look-ahead: 16 steps past the slowest rank's progress.
    ASSERT_EQ(assignments->size(), 16u);
    for (const auto& assignment : *assignments) {
      const auto expected = *sampler::RankExampleIds(
          *sampler, 100, assignment.step(), 2, membership->rank());
      EXPECT_EQ(std::vector<int64_t>(assignment.example_ids().begin(),
                                     assignment.example_ids().end()),
                expected);
    }
  }
}

// A stream opened with positions carries each step's slice of the stream
// instead of its ids: the same steps, and positions that the sampler maps to
// exactly the ids the stream of ids carries.
TEST_F(CoordinatorTest, PositionAssignmentsNameTheSameExamplesAsIds) {
  StartTwoWorkerJob();
  auto sampler = *sampler::StreamSampler::Create(
      std::vector<int64_t>(10, 100), {.seed = 7, .window_shards = 2});
  for (const auto& [worker, incarnation] :
       std::vector<std::pair<std::string, uint64_t>>{{"w0", 100},
                                                     {"w1", 200}}) {
    auto membership = Join(worker, incarnation);
    v1::StreamAssignmentsRequest request =
        StreamRequest(worker, incarnation, 3);
    auto ids = coordinator_->NextAssignments(request, 100, clock_.Now());
    request.set_positions(true);
    auto positions = coordinator_->NextAssignments(request, 100, clock_.Now());
    ASSERT_TRUE(ids.ok()) << ids.status();
    ASSERT_TRUE(positions.ok()) << positions.status();
    ASSERT_EQ(positions->size(), ids->size());
    ASSERT_FALSE(positions->empty());
    for (size_t i = 0; i < positions->size(); ++i) {
      const v1::StepAssignment& assignment = (*positions)[i];
      EXPECT_EQ(assignment.step(), (*ids)[i].step());
      EXPECT_EQ(assignment.generation(), 1);
      EXPECT_TRUE(assignment.example_ids().empty());
      const auto range = *sampler::RankPositions(100, assignment.step(), 2,
                                                 membership->rank());
      EXPECT_EQ(assignment.positions().begin(), range.begin);
      EXPECT_EQ(assignment.positions().end(), range.end);
      std::vector<int64_t> expanded;
      ASSERT_TRUE(sampler->Fill(range.begin, range.size(), &expanded).ok());
      EXPECT_EQ(expanded, std::vector<int64_t>((*ids)[i].example_ids().begin(),
                                               (*ids)[i].example_ids().end()));
    }
  }
}

TEST_F(CoordinatorTest, StepReportsAreAuditedAgainstAssignments) {
  const std::string job = StartTwoWorkerJob();
  auto membership = Join("w0", 100);
  auto sampler = *sampler::StreamSampler::Create(
      std::vector<int64_t>(10, 100), {.seed = 7, .window_shards = 2});
  const auto ids =
      *sampler::RankExampleIds(*sampler, 100, 0, 2, membership->rank());
  v1::ReportStepRequest report;
  report.set_worker_id("w0");
  report.set_incarnation(100);
  report.set_generation(1);
  report.set_step(0);
  report.set_example_count(ids.size());
  report.set_example_digest(sampler::ExampleDigest(ids));
  EXPECT_TRUE(coordinator_->ReportStep(report).ok());
  report.set_example_digest(sampler::ExampleDigest(ids) ^ 1);
  auto mismatch = coordinator_->ReportStep(report);
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(mismatch.message().find("not the examples assigned"),
            std::string::npos);
}

// A world larger than max_reports_per_step (here 1, so 2 ranks make k = 2)
// reports every k steps, each report carrying the steps since the last one,
// and gets its assignments k steps a message at a rank's own offset.
// Messages may be sparser than reports: with 2 ranks and at most 1 message
// a step, each rank gets m = 2 steps a message at its own offset while both
// still report every step (k = 1), and the look-ahead covers m + k + 4.
TEST_F(CoordinatorTest, AssignmentMessagesCanBeSparserThanReports) {
  max_messages_per_step_ = 1;
  assignment_lookahead_steps_ = 4;
  Restart();
  StartTwoWorkerJob();
  std::map<std::string, int32_t> rank;
  for (const auto& [worker, incarnation] :
       std::vector<std::pair<std::string, uint64_t>>{{"w0", 100},
                                                     {"w1", 200}}) {
    auto world = Join(worker, incarnation);
    ASSERT_TRUE(world.ok()) << world.status();
    EXPECT_EQ(world->report_every_steps(), 1);
    EXPECT_EQ(world->assignment_lookahead_steps(), 7);  // m + k + 4
    rank[worker] = world->rank();
  }
  for (const auto& [worker, incarnation] :
       std::vector<std::pair<std::string, uint64_t>>{{"w0", 100},
                                                     {"w1", 200}}) {
    v1::StreamAssignmentsRequest request =
        StreamRequest(worker, incarnation, 0);
    auto first = coordinator_->NextAssignments(request, 100, clock_.Now());
    ASSERT_TRUE(first.ok()) << first.status();
    // Up to the horizon (no step reported yet: -1 + 1 + 7 = 7), cut at the
    // rank's offset.
    const int64_t end = first->back().step() + 1;
    EXPECT_EQ((end + rank[worker]) % 2, 0) << worker << " ends at " << end;
    EXPECT_GE(end, 6);
    EXPECT_LE(end, 7);
    // The horizon has not moved: nothing more, even one step on.
    request.set_from_step(end);
    EXPECT_EQ(coordinator_
                  ->NextAssignments(request, 100, clock_.Now(),
                                    /*continuation=*/true)
                  .status()
                  .code(),
              absl::StatusCode::kDeadlineExceeded);
  }
}

TEST_F(CoordinatorTest, LargeWorldsReportEveryKStepsAndGetKStepsAMessage) {
  max_reports_per_step_ = 1;
  Restart();
  StartTwoWorkerJob();
  auto sampler = *sampler::StreamSampler::Create(
      std::vector<int64_t>(10, 100), {.seed = 7, .window_shards = 2});
  const std::vector<std::pair<std::string, uint64_t>> workers = {{"w0", 100},
                                                                 {"w1", 200}};
  std::map<std::string, int32_t> rank;
  for (const auto& [worker, incarnation] : workers) {
    auto world = Join(worker, incarnation);
    ASSERT_TRUE(world.ok()) << world.status();
    EXPECT_EQ(world->report_every_steps(), 2);
    EXPECT_EQ(world->assignment_lookahead_steps(), 16);  // max(16, 2k + 4)
    rank[worker] = world->rank();
  }
  const auto fetch = [&](const std::string& worker, uint64_t incarnation,
                         int64_t from) {
    v1::StreamAssignmentsRequest request =
        StreamRequest(worker, incarnation, from);
    return coordinator_->NextAssignments(request, 100, clock_.Now(),
                                         /*continuation=*/from > 0);
  };
  const auto digest = [&](int64_t step, int32_t r) {
    v1::StepDigest d;
    d.set_step(step);
    const auto ids = *sampler::RankExampleIds(*sampler, 100, step, 2, r);
    d.set_example_count(ids.size());
    d.set_example_digest(sampler::ExampleDigest(ids));
    return d;
  };
  // The first message: up to the horizon (0 + 16), cut at the rank's offset.
  std::map<std::string, int64_t> next;
  for (const auto& [worker, incarnation] : workers) {
    auto first = fetch(worker, incarnation, 0);
    ASSERT_TRUE(first.ok()) << first.status();
    const int64_t end = first->back().step() + 1;
    EXPECT_EQ((end + rank[worker]) % 2, 0) << worker << " ends at " << end;
    EXPECT_GE(end, 15);
    next[worker] = end;
  }
  // Both report steps 0 and 1 in one call each: the horizon moves to 18,
  // and each stream gets its next message, k = 2 steps or fewer.
  for (const auto& [worker, incarnation] : workers) {
    v1::ReportStepRequest report;
    report.set_worker_id(worker);
    report.set_incarnation(incarnation);
    report.set_generation(1);
    const v1::StepDigest newest = digest(1, rank[worker]);
    report.set_step(1);
    report.set_example_count(newest.example_count());
    report.set_example_digest(newest.example_digest());
    *report.add_earlier_steps() = digest(0, rank[worker]);
    const absl::Status reported = coordinator_->ReportStep(report);
    ASSERT_TRUE(reported.ok()) << reported;
  }
  for (const auto& [worker, incarnation] : workers) {
    auto more = fetch(worker, incarnation, next[worker]);
    ASSERT_TRUE(more.ok()) << more.status();
    ASSERT_FALSE(more->empty());
    EXPECT_EQ(more->front().step(), next[worker]);
    const int64_t end = more->back().step() + 1;
    EXPECT_LE(end, 18);
    EXPECT_EQ((end + rank[worker]) % 2, 0) << worker << " ends at " << end;
    // Nothing more until the horizon moves again.
    EXPECT_EQ(fetch(worker, incarnation, end).status().code(),
              absl::StatusCode::kDeadlineExceeded);
  }

  // Every step of a report is audited: a wrong digest at an earlier step is
  // refused and named; earlier steps that are not consecutive are invalid.
  v1::ReportStepRequest report;
  report.set_worker_id("w0");
  report.set_incarnation(100);
  report.set_generation(1);
  const v1::StepDigest newest = digest(4, rank["w0"]);
  report.set_step(4);
  report.set_example_count(newest.example_count());
  report.set_example_digest(newest.example_digest());
  *report.add_earlier_steps() = digest(2, rank["w0"]);
  *report.add_earlier_steps() = digest(3, rank["w0"]);
  report.mutable_earlier_steps(0)->set_example_digest(
      report.earlier_steps(0).example_digest() ^ 1);
  const absl::Status mismatch = coordinator_->ReportStep(report);
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(mismatch.message().find("step 2 "), std::string::npos) << mismatch;
  *report.mutable_earlier_steps(0) = digest(2, rank["w0"]);
  report.mutable_earlier_steps(1)->set_step(5);
  const absl::Status gap = coordinator_->ReportStep(report);
  EXPECT_EQ(gap.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(gap.message().find("earlier_steps[1].step"), std::string::npos)
      << gap;
  *report.mutable_earlier_steps(1) = digest(3, rank["w0"]);
  EXPECT_TRUE(coordinator_->ReportStep(report).ok());
}

TEST_F(CoordinatorTest, ACheckpointCountsOnceEveryRankCommitted) {
  const std::string job = StartTwoWorkerJob();
  auto first = CommitAt("w0", 100, 1, 9);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->committed());
  EXPECT_EQ(Job(job).committed_step(), -1);
  auto second = CommitAt("w1", 200, 1, 9);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->committed());
  EXPECT_EQ(Job(job).committed_step(), 9);
  // The last step's commit ends the job.
  ASSERT_TRUE(CommitAt("w0", 100, 1, 49).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 49).ok());
  EXPECT_EQ(Job(job).state(), v1::SUCCEEDED);
  auto heartbeat = Heartbeat("w0", 100, 1);
  ASSERT_TRUE(heartbeat.ok());
  EXPECT_TRUE(heartbeat->job_finished());  // "stop", and free for the next
  EXPECT_EQ(heartbeat->job(), job);
}

TEST_F(CoordinatorTest, LeaseExpiryBumpsTheGenerationAndCountsARestart) {
  const std::string job = StartTwoWorkerJob();
  // w1 is never heard from again; w0 keeps heartbeating.
  for (int i = 0; i < 12; ++i) {
    clock_.Advance(absl::Milliseconds(300));
    ASSERT_TRUE(Heartbeat("w0", 100, 1).ok());
    coordinator_->Tick();
  }
  auto heartbeat = Heartbeat("w0", 100, 1);
  ASSERT_TRUE(heartbeat.ok());
  EXPECT_EQ(heartbeat->generation(), 2);  // "abort and rejoin"
  EXPECT_EQ(Job(job).state(), v1::RESTARTING);
  EXPECT_EQ(Heartbeat("w1", 200, 1).status().code(),
            absl::StatusCode::kNotFound);
  // min_workers is 2: w0 alone cannot form generation 2, a new worker can.
  EXPECT_FALSE(Join("w0", 100, 1).ok());
  Register("w2", 300);
  EXPECT_FALSE(Join("w2", 300).ok());  // restart backoff still running
  clock_.Advance(absl::Seconds(1));
  coordinator_->Tick();
  auto joined = Join("w2", 300);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->generation(), 2);
  EXPECT_EQ(joined->world_size(), 2);
  const v1::Job after = Job(job);
  EXPECT_EQ(after.restarts(), 1);
  EXPECT_EQ(after.state(), v1::RUNNING);
}

TEST_F(CoordinatorTest, HeartbeatIntervalAndLeaseGrowWithThePool) {
  // At most 10 heartbeats/s in all: up to 3 workers keep 300 ms and 3 s,
  // the 6th is handed 600 ms and 6 s.
  coordinator_.reset();
  CoordinatorOptions options;
  options.journal_path = journal_;
  options.max_heartbeats_per_second = 10;
  auto created = Coordinator::Create(options, &clock_);
  ASSERT_TRUE(created.ok()) << created.status();
  coordinator_ = std::move(*created);
  std::vector<v1::RegisterResponse> responses;
  for (int i = 0; i < 6; ++i) {
    v1::RegisterRequest request;
    request.set_worker_id("w" + std::to_string(i));
    request.set_incarnation(100 + i);
    auto response = coordinator_->Register(request);
    ASSERT_TRUE(response.ok()) << response.status();
    responses.push_back(*response);
  }
  EXPECT_EQ(responses[2].heartbeat_interval_ms(), 300);
  EXPECT_EQ(responses[2].lease_ms(), 3000);
  EXPECT_EQ(responses[3].heartbeat_interval_ms(), 400);
  EXPECT_EQ(responses[3].lease_ms(), 4000);
  EXPECT_EQ(responses[5].heartbeat_interval_ms(), 600);
  EXPECT_EQ(responses[5].lease_ms(), 6000);
  // w5 keeps the lease it was handed; w0, registered into a pool of one,
  // is handed the pool's timing on its next heartbeat.
  clock_.Advance(absl::Milliseconds(2900));
  coordinator_->Tick();
  auto w0 = Heartbeat("w0", 100, 0);
  ASSERT_TRUE(w0.ok()) << w0.status();
  EXPECT_EQ(w0->heartbeat_interval_ms(), 600);
  EXPECT_EQ(w0->lease_ms(), 6000);
  clock_.Advance(absl::Milliseconds(3000));
  coordinator_->Tick();
  ASSERT_TRUE(Heartbeat("w5", 105, 0).ok());  // 5.9 s after registering
  ASSERT_TRUE(Heartbeat("w0", 100, 0).ok());  // 3 s after its heartbeat
  // Both are renewed for 6 s; then silence ends them.
  clock_.Advance(absl::Milliseconds(6100));
  coordinator_->Tick();
  EXPECT_EQ(Heartbeat("w5", 105, 0).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Heartbeat("w0", 100, 0).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, AJobsMaxWorkersCountsTowardsThePool) {
  // The pod comes up after its job is submitted: its first workers are
  // already handed the interval of the whole pool.
  coordinator_.reset();
  CoordinatorOptions options;
  options.journal_path = journal_;
  options.max_heartbeats_per_second = 4;
  auto created = Coordinator::Create(options, &clock_);
  ASSERT_TRUE(created.ok()) << created.status();
  coordinator_ = std::move(*created);
  CreateJob(2, 4);
  v1::RegisterRequest request;
  request.set_worker_id("w0");
  request.set_incarnation(100);
  auto response = coordinator_->Register(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->heartbeat_interval_ms(), 1000);
  EXPECT_EQ(response->lease_ms(), 10000);
}

TEST_F(CoordinatorTest, AHeartbeatRateBoundMustNotBeNegative) {
  CoordinatorOptions options;
  options.journal_path = journal_ + ".other";
  options.max_heartbeats_per_second = -1;
  EXPECT_EQ(Coordinator::Create(options, &clock_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CoordinatorTest, ACollectiveErrorRestartsTheWholeWorld) {
  const std::string job = StartTwoWorkerJob();
  ASSERT_TRUE(CommitAt("w0", 100, 1, 9).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 9).ok());
  ASSERT_TRUE(Heartbeat("w0", 100, 1, false, "Connection reset by peer").ok());
  auto told = Heartbeat("w1", 200, 1);
  ASSERT_TRUE(told.ok());
  EXPECT_EQ(told->generation(), 2);
  EXPECT_FALSE(Join("w0", 100, 1).ok());
  EXPECT_FALSE(Join("w1", 200, 1).ok());
  clock_.Advance(absl::Milliseconds(600));  // backoff
  coordinator_->Tick();
  auto rejoined = Join("w0", 100, 1);
  ASSERT_TRUE(rejoined.ok()) << rejoined.status();
  EXPECT_EQ(rejoined->generation(), 2);
  EXPECT_EQ(rejoined->resume_step(), 9);
  EXPECT_EQ(rejoined->resume_checkpoint(), "/ckpt/step-9");
}

TEST_F(CoordinatorTest, ANewWorldResumesFromTheStateItsRanksHold) {
  const std::string job = StartTwoWorkerJob();
  ASSERT_TRUE(CommitAt("w0", 100, 1, 9).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 9).ok());
  ASSERT_TRUE(Heartbeat("w1", 200, 1, false, "Connection reset by peer").ok());
  ASSERT_TRUE(Heartbeat("w0", 100, 1).ok());
  EXPECT_FALSE(Join("w0", 100, 1).ok());
  EXPECT_FALSE(Join("w1", 200, 1).ok());
  clock_.Advance(absl::Milliseconds(600));  // backoff
  coordinator_->Tick();
  auto first = Join("w0", 100, 1);
  auto second = Join("w1", 200, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(first->generation(), 2);
  EXPECT_EQ(first->resume_step(), 9);
  ASSERT_EQ(first->continuable_generations_size(), 1);
  EXPECT_EQ(first->continuable_generations(0), 1);
  const bool w0_first = first->rank() == 0;
  const std::string rank0 = w0_first ? "w0" : "w1";
  const std::string rank1 = w0_first ? "w1" : "w0";
  v1::ResumeFromHeldStateRequest resume;
  resume.set_worker_id(rank1);
  resume.set_incarnation(w0_first ? 200 : 100);
  resume.set_generation(2);
  resume.set_step(14);
  resume.set_from_generation(1);
  EXPECT_EQ(coordinator_->ResumeFromHeldState(resume).code(),
            absl::StatusCode::kInvalidArgument);  // not rank 0
  resume.set_worker_id(rank0);
  resume.set_incarnation(w0_first ? 100 : 200);
  resume.set_from_generation(2);  // not an earlier generation
  EXPECT_EQ(coordinator_->ResumeFromHeldState(resume).code(),
            absl::StatusCode::kFailedPrecondition);
  resume.set_from_generation(1);
  resume.set_step(9);  // not after the commit
  EXPECT_EQ(coordinator_->ResumeFromHeldState(resume).code(),
            absl::StatusCode::kInvalidArgument);
  resume.set_step(14);
  const absl::Status resumed = coordinator_->ResumeFromHeldState(resume);
  ASSERT_TRUE(resumed.ok()) << resumed;
  EXPECT_EQ(coordinator_->ResumeFromHeldState(resume).code(),
            absl::StatusCode::kFailedPrecondition);  // once only

  // Journaled: a restarted coordinator hands out assignments from step 15.
  Restart();
  Register("w0", 100);
  Register("w1", 200);
  v1::StreamAssignmentsRequest stream;
  stream.set_worker_id("w0");
  stream.set_incarnation(100);
  stream.set_generation(2);
  stream.set_from_step(15);
  auto assignments = coordinator_->NextAssignments(stream, 4, clock_.Now());
  ASSERT_TRUE(assignments.ok()) << assignments.status();
  ASSERT_FALSE(assignments->empty());
  EXPECT_EQ(assignments->front().step(), 15);
  // The commit after the resume is an ordinary one.
  ASSERT_TRUE(CommitAt("w0", 100, 2, 19).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 2, 19)->committed());
  EXPECT_EQ(Job(job).committed_step(), 19);
}

TEST_F(CoordinatorTest, ARejectedCheckpointLeavesTheLineage) {
  const std::string job = StartTwoWorkerJob();
  for (int64_t step : {9, 19}) {
    ASSERT_TRUE(CommitAt("w0", 100, 1, step).ok());
    ASSERT_TRUE(CommitAt("w1", 200, 1, step).ok());
  }
  v1::RejectCheckpointRequest reject;
  reject.set_worker_id("w1");
  reject.set_incarnation(200);
  reject.set_generation(1);
  reject.set_step(19);
  reject.set_path("/ckpt/step-19");
  EXPECT_EQ(coordinator_->RejectCheckpoint(reject).status().code(),
            absl::StatusCode::kInvalidArgument);  // no reason given
  reject.set_reason("DATA_LOSS: model.bin: checksum mismatch");
  auto rejected = coordinator_->RejectCheckpoint(reject);
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  EXPECT_EQ(rejected->resume_step(), 9);
  EXPECT_EQ(Job(job).committed_step(), 9);
  // The other rank's rejection of the same checkpoint changes nothing.
  reject.set_worker_id("w0");
  reject.set_incarnation(100);
  rejected = coordinator_->RejectCheckpoint(reject);
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  EXPECT_EQ(rejected->resume_step(), 9);
  // A step the lineage never had is refused.
  reject.set_step(3);
  EXPECT_EQ(coordinator_->RejectCheckpoint(reject).status().code(),
            absl::StatusCode::kInvalidArgument);

  // The world re-forms from step 9, as a restart.
  auto told = Heartbeat("w0", 100, 1);
  ASSERT_TRUE(told.ok());
  EXPECT_EQ(told->generation(), 2);
  EXPECT_FALSE(Join("w0", 100, 1).ok());
  EXPECT_FALSE(Join("w1", 200, 1).ok());
  clock_.Advance(absl::Seconds(1));  // backoff
  coordinator_->Tick();
  auto rejoined = Join("w0", 100, 1);
  ASSERT_TRUE(rejoined.ok()) << rejoined.status();
  EXPECT_EQ(rejoined->resume_step(), 9);
  EXPECT_EQ(rejoined->resume_checkpoint(), "/ckpt/step-9");
  EXPECT_EQ(Job(job).restarts(), 1);

  // The rejection is durable: a restarted coordinator resumes from step 9.
  Restart();
  EXPECT_EQ(Job(job).committed_step(), 9);
}

TEST_F(CoordinatorTest, AStoreWaitForAnEndedGenerationIsAborted) {
  const std::string job = StartTwoWorkerJob();
  v1::StoreGetRequest get;
  get.set_key(job + "/generation/1/rank-1");
  // The generation is current: an unset key is simply not there yet.
  EXPECT_EQ(coordinator_->StoreGet(get, clock_.Now()).status().code(),
            absl::StatusCode::kNotFound);
  // w1 died: generation 1 is over, so nobody should wait for its keys.
  ASSERT_TRUE(Heartbeat("w0", 100, 1, false, "peer gone").ok());
  const auto aborted = coordinator_->StoreGet(get, clock_.Now());
  EXPECT_EQ(aborted.status().code(), absl::StatusCode::kAborted)
      << aborted.status();
  // Keys of a generation not formed yet are waited for as before.
  get.set_key(job + "/generation/2/rank-1");
  EXPECT_EQ(coordinator_->StoreGet(get, clock_.Now()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, RestartBudgetStopsARestartStorm) {
  const std::string job = StartTwoWorkerJob();
  int64_t generation = 1;
  std::vector<absl::Duration> waited;
  for (int restart = 0; restart < 4; ++restart) {
    ASSERT_TRUE(Heartbeat("w0", 100, generation, false, "boom").ok());
    if (Job(job).state() == v1::FAILED) break;
    // Rejoin, heartbeating through the backoff until the world re-forms.
    const absl::Time failed_at = clock_.Now();
    absl::StatusOr<v1::JoinGenerationResponse> joined;
    for (int tick = 0; tick < 200; ++tick) {
      (void)Join("w0", 100, generation);
      joined = Join("w1", 200, generation);
      if (joined.ok()) break;
      clock_.Advance(absl::Milliseconds(100));
      ASSERT_TRUE(Heartbeat("w0", 100, generation).ok());
      ASSERT_TRUE(Heartbeat("w1", 200, generation).ok());
      coordinator_->Tick();
    }
    ASSERT_TRUE(joined.ok()) << joined.status();
    waited.push_back(clock_.Now() - failed_at);
    generation = joined->generation();
  }
  const v1::Job failed = Job(job);
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_EQ(failed.restarts(), 3);
  EXPECT_NE(failed.state_message().find("restart budget of 3 exhausted"),
            std::string::npos)
      << failed.state_message();
  // Exponential backoff between restarts: 0.5 s, 1 s, 2 s.
  ASSERT_EQ(waited.size(), 3u);
  EXPECT_GE(waited[0], absl::Milliseconds(500));
  EXPECT_GE(waited[1], absl::Seconds(1));
  EXPECT_GE(waited[2], absl::Seconds(2));
  EXPECT_LT(waited[2], absl::Seconds(3));
}

TEST_F(CoordinatorTest, PreemptionCheckpointsThenTheWorkerLeaves) {
  const std::string job = CreateJob(1, 2);
  Register("w0", 100);
  Register("w1", 200);
  (void)Join("w0", 100);
  ASSERT_TRUE(Join("w1", 200).ok());
  ASSERT_TRUE(Join("w0", 100).ok());
  auto notice = Heartbeat("w1", 200, 1, /*preempting=*/true);
  ASSERT_TRUE(notice.ok());
  EXPECT_TRUE(notice->checkpoint_requested());
  EXPECT_TRUE(Heartbeat("w0", 100, 1)->checkpoint_requested());
  ASSERT_TRUE(CommitAt("w0", 100, 1, 17).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 17)->committed());
  // w1 is gone; w0 re-forms the world alone, with no restart counted and no
  // backoff.
  EXPECT_EQ(Heartbeat("w1", 200, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Heartbeat("w0", 100, 1)->generation(), 2);
  auto alone = Join("w0", 100, 1);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->world_size(), 1);
  EXPECT_EQ(alone->resume_step(), 17);
  EXPECT_EQ(Job(job).restarts(), 0);
}

TEST_F(CoordinatorTest, RestartedCoordinatorRecoversAndMembersCarryOn) {
  const std::string job = StartTwoWorkerJob();
  ASSERT_TRUE(CommitAt("w0", 100, 1, 19).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 19).ok());
  Restart();  // kill -9: only the journal survives
  const v1::Job recovered = Job(job);
  EXPECT_EQ(recovered.state(), v1::RUNNING);
  EXPECT_EQ(recovered.generation(), 1);
  EXPECT_EQ(recovered.committed_step(), 19);
  EXPECT_EQ(recovered.world_size(), 2);
  // The members come back with their incarnations: same generation, no
  // restart, training continues.
  Register("w0", 100);
  Register("w1", 200);
  auto heartbeat = Heartbeat("w0", 100, 1);
  ASSERT_TRUE(heartbeat.ok());
  EXPECT_EQ(heartbeat->generation(), 1);
  ASSERT_TRUE(CommitAt("w0", 100, 1, 29).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 29)->committed());
  EXPECT_EQ(Job(job).restarts(), 0);
  // A new job gets the next name, not a reused one.
  EXPECT_EQ(CreateJob(1, 1), "jobs/000002");
}

TEST_F(CoordinatorTest, TheFinalEvaluationIsKeptWithTheLineage) {
  const std::string job = StartTwoWorkerJob();
  auto membership = Join("w0", 100);
  auto sampler = *sampler::StreamSampler::Create(
      std::vector<int64_t>(10, 100), {.seed = 7, .window_shards = 2});
  const auto ids =
      *sampler::RankExampleIds(*sampler, 100, 49, 2, membership->rank());
  v1::ReportStepRequest report;
  report.set_worker_id("w0");
  report.set_incarnation(100);
  report.set_generation(1);
  report.set_step(49);
  report.set_example_count(ids.size());
  report.set_example_digest(sampler::ExampleDigest(ids));
  report.set_eval_accuracy(0.875);
  ASSERT_TRUE(coordinator_->ReportStep(report).ok());
  EXPECT_DOUBLE_EQ(Job(job).eval_accuracy(), 0.875);
  ASSERT_TRUE(CommitAt("w0", 100, 1, 49).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 49).ok());
  Restart();
  const v1::Job done = Job(job);
  EXPECT_EQ(done.state(), v1::SUCCEEDED);
  ASSERT_TRUE(done.has_eval_accuracy());
  EXPECT_DOUBLE_EQ(done.eval_accuracy(), 0.875);
  EXPECT_EQ(done.eval_step(), 49);
}

// After a restart the members get the recovery lease (10 s), not just one
// lease (3 s), to come back; one that does not is then replaced.
TEST_F(CoordinatorTest, AMemberThatNeverComesBackAfterRecoveryIsReplaced) {
  const std::string job = StartTwoWorkerJob();
  Restart();
  Register("w0", 100);
  for (int i = 0; i < 32; ++i) {  // 9.6 s: past a lease, within the grace
    clock_.Advance(absl::Milliseconds(300));
    ASSERT_TRUE(Heartbeat("w0", 100, 1).ok());
    coordinator_->Tick();
  }
  EXPECT_EQ(Job(job).state(), v1::RUNNING);
  for (int i = 0; i < 2; ++i) {  // 10.2 s
    clock_.Advance(absl::Milliseconds(300));
    ASSERT_TRUE(Heartbeat("w0", 100, 1).ok());
    coordinator_->Tick();
  }
  EXPECT_EQ(Job(job).state(), v1::RESTARTING);
  EXPECT_EQ(Heartbeat("w0", 100, 1)->generation(), 2);
}

// Tick scans for expired leases only once one may have run out (a lower
// bound of every deadline). A worker that registers after a scan with a
// lease ending before everyone else's (here: the recovered members hold the
// 10 s recovery lease, the newcomer the ordinary 3 s) must still expire on
// time.
TEST_F(CoordinatorTest, ALeaseShorterThanEveryOtherStillExpiresOnTime) {
  StartTwoWorkerJob();
  Restart();
  coordinator_->Tick();  // scanned: no lease ends within 10 s
  Register("w2", 300);
  for (int i = 0; i < 12; ++i) {  // 3.6 s
    clock_.Advance(absl::Milliseconds(300));
    ASSERT_TRUE(Heartbeat("w0", 100, 1).ok());
    ASSERT_TRUE(Heartbeat("w1", 200, 1).ok());
    coordinator_->Tick();
  }
  EXPECT_EQ(Heartbeat("w2", 300, 0).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(Heartbeat("w0", 100, 1).ok());
}

TEST_F(CoordinatorTest, WatchSeesStateGenerationAndCommitEvents) {
  const std::string job = StartTwoWorkerJob();
  ASSERT_TRUE(CommitAt("w0", 100, 1, 9).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 9).ok());
  int64_t next = 0;
  auto events = coordinator_->WaitForEvents(job, 0, clock_.Now(), &next);
  ASSERT_TRUE(events.ok());
  bool generation = false, running = false, committed = false;
  for (const auto& event : *events) {
    generation |= event.has_generation_changed();
    running |=
        event.has_state_changed() && event.state_changed().to() == v1::RUNNING;
    committed |= event.has_checkpoint_committed() &&
                 event.checkpoint_committed().step() == 9;
  }
  EXPECT_TRUE(generation);
  EXPECT_TRUE(running);
  EXPECT_TRUE(committed);
  auto none = coordinator_->WaitForEvents(job, next, clock_.Now(), &next);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

// UpdateGauges recounts the workers only when one came, went or changed
// between free, joining and member: every such change must show. `counts`
// ticks and names the first gauge line that is not as expected.
TEST_F(CoordinatorTest, WorkerGaugesFollowWorkersComingJoiningAndLeaving) {
  const auto counts = [&](int free, int joining, int member) {
    coordinator_->Tick();
    const std::string text =
        SerializeMetrics(*coordinator_->metrics().registry());
    for (const auto& [state, count] :
         {std::pair<std::string, int>{"free", free},
          {"joining", joining},
          {"member", member}}) {
      const std::string line = absl::StrCat(
          "podtrain_coordinator_workers{state=\"", state, "\"} ", count, "\n");
      if (text.find(line) == std::string::npos) return "missing: " + line;
    }
    return std::string();
  };
  Register("w0", 100);
  EXPECT_EQ(counts(1, 0, 0), "");
  CreateJob(2, 2);
  EXPECT_EQ(Join("w0", 100).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(counts(0, 1, 0), "");
  Register("w1", 200);
  ASSERT_TRUE(Join("w1", 200).ok());
  ASSERT_TRUE(Join("w0", 100).ok());
  EXPECT_EQ(counts(0, 0, 2), "");
  Register("w2", 300);
  EXPECT_EQ(counts(1, 0, 2), "");
  for (int i = 0; i < 12; ++i) {  // 3.6 s: w2's 3 s lease runs out
    clock_.Advance(absl::Milliseconds(300));
    ASSERT_TRUE(Heartbeat("w0", 100, 1).ok());
    ASSERT_TRUE(Heartbeat("w1", 200, 1).ok());
    coordinator_->Tick();
  }
  EXPECT_EQ(counts(0, 0, 2), "");
}

TEST_F(CoordinatorTest, MetricsFollowJobsWorkersGenerationsAndCommits) {
  const std::string job = StartTwoWorkerJob();
  ASSERT_TRUE(CommitAt("w0", 100, 1, 9).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 9).ok());
  coordinator_->Tick();
  const auto text = [&] {
    return SerializeMetrics(*coordinator_->metrics().registry());
  };
  const auto has = [&](const std::string& line) {
    return text().find(line + "\n") != std::string::npos;
  };
  EXPECT_TRUE(has("podtrain_coordinator_jobs{state=\"RUNNING\"} 1")) << text();
  EXPECT_TRUE(has("podtrain_coordinator_workers{state=\"member\"} 2"));
  EXPECT_TRUE(
      has("podtrain_coordinator_generation_changes_total{cause=\"first\"} 1"));
  // Steps 0..9 of global batch 100.
  EXPECT_TRUE(has("podtrain_coordinator_committed_examples_total 1000"));
  EXPECT_TRUE(has("podtrain_job_committed_step{job_name=\"jobs/000001\"} 9"));
  EXPECT_TRUE(has("podtrain_job_epoch{job_name=\"jobs/000001\"} 1"));
  EXPECT_TRUE(
      has("podtrain_coordinator_checkpoint_commit_duration_seconds_"
          "count 1"));
  ASSERT_TRUE(coordinator_->CancelJob(job).ok());
  coordinator_->Tick();
  // A finished job's series are gone; the state counts moved.
  EXPECT_EQ(text().find("job_name=\"jobs/000001\""), std::string::npos);
  EXPECT_TRUE(has("podtrain_coordinator_jobs{state=\"CANCELLED\"} 1"));
}

TEST_F(CoordinatorTest, PerJobMetricsForAlertsAndDashboards) {
  const absl::Time started = clock_.Now();
  const std::string job = StartTwoWorkerJob();
  const auto text = [&] {
    return SerializeMetrics(*coordinator_->metrics().registry());
  };
  const auto has = [&](const std::string& name, const std::string& value) {
    return text().find(name + "{job_name=\"jobs/000001\"} " + value + "\n") !=
           std::string::npos;
  };
  const auto seconds = [](absl::Time time) {
    return std::to_string(absl::ToUnixSeconds(time));
  };
  auto sampler = *sampler::StreamSampler::Create(
      std::vector<int64_t>(10, 100), {.seed = 7, .window_shards = 2});
  const auto report = [&](const std::string& worker, uint64_t incarnation,
                          int32_t rank, int64_t generation, int64_t step) {
    const auto ids = *sampler::RankExampleIds(*sampler, 100, step, 2, rank);
    v1::ReportStepRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(incarnation);
    request.set_generation(generation);
    request.set_step(step);
    request.set_example_count(ids.size());
    request.set_example_digest(sampler::ExampleDigest(ids));
    return coordinator_->ReportStep(request);
  };
  coordinator_->Tick();
  // The world formed: the lineage clock starts; nothing trained yet.
  EXPECT_TRUE(has("podtrain_job_step", "-1")) << text();
  EXPECT_TRUE(has("podtrain_job_restarts", "0"));
  EXPECT_TRUE(has("podtrain_job_restarts_remaining", "3"));
  EXPECT_TRUE(has("podtrain_job_checkpoint_interval_steps", "10"));
  EXPECT_TRUE(has("podtrain_job_examples_total", "0"));
  EXPECT_TRUE(
      has("podtrain_job_last_checkpoint_timestamp_seconds", seconds(started)));

  // Rank 0 is at step 1, rank 1 at step 0: the world has finished step 0.
  ASSERT_TRUE(report("w0", 100, 0, 1, 0).ok());
  ASSERT_TRUE(report("w0", 100, 0, 1, 1).ok());
  ASSERT_TRUE(report("w1", 200, 1, 1, 0).ok());
  coordinator_->Tick();
  EXPECT_TRUE(has("podtrain_job_step", "0")) << text();
  clock_.Advance(absl::Seconds(2));  // within the 3 s lease
  ASSERT_TRUE(CommitAt("w0", 100, 1, 9).ok());
  ASSERT_TRUE(CommitAt("w1", 200, 1, 9).ok());
  const absl::Time committed = clock_.Now();
  coordinator_->Tick();
  // The world's step is at least the committed one.
  EXPECT_TRUE(has("podtrain_job_step", "9")) << text();
  EXPECT_TRUE(has("podtrain_job_examples_total", "150"));  // 3 x 50
  EXPECT_TRUE(has("podtrain_job_last_checkpoint_timestamp_seconds",
                  seconds(committed)));

  // A collective error is an involuntary restart: one less in the budget.
  ASSERT_TRUE(Heartbeat("w0", 100, 1, false, "Connection reset by peer").ok());
  EXPECT_FALSE(Join("w0", 100, 1).ok());
  EXPECT_FALSE(Join("w1", 200, 1).ok());
  clock_.Advance(absl::Milliseconds(600));  // backoff
  coordinator_->Tick();
  ASSERT_TRUE(Join("w0", 100, 1).ok());
  coordinator_->Tick();
  EXPECT_TRUE(has("podtrain_job_restarts", "1")) << text();
  EXPECT_TRUE(has("podtrain_job_restarts_remaining", "2"));
  EXPECT_TRUE(has("podtrain_job_generation", "2"));

  // The lineage time comes from the journal: a restarted coordinator keeps
  // it (a fresh clock reading would hide a stale checkpoint).
  clock_.Advance(absl::Minutes(5));
  Restart();
  coordinator_->Tick();
  EXPECT_TRUE(
      has("podtrain_job_last_checkpoint_timestamp_seconds", seconds(committed)))
      << text();
  EXPECT_TRUE(has("podtrain_job_restarts", "1"));
}

TEST_F(CoordinatorTest, StaleIncarnationsAreAborted) {
  const std::string job = StartTwoWorkerJob();
  Register("w1", 201);  // w1 restarted
  EXPECT_EQ(Heartbeat("w1", 200, 1).status().code(),
            absl::StatusCode::kAborted);
  // ... which is a membership change for its job.
  EXPECT_EQ(Heartbeat("w0", 100, 1)->generation(), 2);
  v1::RegisterRequest bad;
  EXPECT_EQ(coordinator_->Register(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace podtrain::coordinator
