// State tests through Apply alone: no RPC, no threads, no clock.

#include "coordinator/coordinator_state.h"

#include <gtest/gtest.h>

namespace podtrain::coordinator {
namespace {

internal::Update Created(const std::string& name,
                         const std::string& request_id = "") {
  internal::Update update;
  update.set_time_micros(1'000'000);
  auto* created = update.mutable_job_created();
  created->set_name(name);
  created->set_request_id(request_id);
  created->mutable_spec()->set_global_batch(256);
  created->add_shard_sizes(600);
  created->add_shard_sizes(400);
  created->set_dataset_fingerprint(0xabc);
  return update;
}

internal::Update StateChanged(const std::string& name, v1::JobState state) {
  internal::Update update;
  update.set_time_micros(9'000'000);
  update.mutable_job_state_changed()->set_name(name);
  update.mutable_job_state_changed()->set_state(state);
  update.mutable_job_state_changed()->set_message("because");
  return update;
}

internal::Update Generation(const std::string& name, int64_t generation,
                            std::vector<std::string> workers,
                            bool restart = false) {
  internal::Update update;
  auto* started = update.mutable_generation_started();
  started->set_name(name);
  started->set_generation(generation);
  started->set_counts_as_restart(restart);
  for (size_t rank = 0; rank < workers.size(); ++rank) {
    auto* member = started->add_members();
    member->set_worker_id(workers[rank]);
    member->set_incarnation(100 + rank);
    member->set_rank(rank);
  }
  return update;
}

internal::Update Commit(const std::string& name, int64_t step,
                        int64_t generation = 1) {
  internal::Update update;
  auto* committed = update.mutable_checkpoint_committed();
  committed->set_name(name);
  committed->set_step(step);
  committed->set_generation(generation);
  committed->set_path("/ckpt/step-" + std::to_string(step));
  return update;
}

internal::Update Rejected(const std::string& name, int64_t step) {
  internal::Update update;
  auto* rejected = update.mutable_checkpoint_rejected();
  rejected->set_name(name);
  rejected->set_step(step);
  rejected->set_path("/ckpt/step-" + std::to_string(step));
  rejected->set_worker_id("w0");
  rejected->set_reason("DATA_LOSS: checksum mismatch");
  return update;
}

internal::Update Resumed(const std::string& name, int64_t generation,
                         int64_t step, int64_t from_generation) {
  internal::Update update;
  auto* resumed = update.mutable_generation_resumed();
  resumed->set_name(name);
  resumed->set_generation(generation);
  resumed->set_step(step);
  resumed->set_from_generation(from_generation);
  resumed->set_worker_id("w0");
  return update;
}

TEST(CoordinatorStateTest, JobLifecycle) {
  CoordinatorState state;
  ASSERT_TRUE(state.Apply(Created("jobs/000001", "req-1")).ok());
  const JobRecord* job = state.FindJob("jobs/000001");
  ASSERT_NE(job, nullptr);
  EXPECT_EQ(job->state, v1::QUEUED);
  EXPECT_EQ(job->examples_per_epoch(), 1000);
  EXPECT_EQ(job->create_time, absl::FromUnixSeconds(1));
  EXPECT_EQ(state.FindJobByRequestId("req-1"), job);
  EXPECT_EQ(state.jobs_created(), 1);

  ASSERT_TRUE(state.Apply(Generation("jobs/000001", 1, {"w0", "w1"})).ok());
  ASSERT_TRUE(state.Apply(StateChanged("jobs/000001", v1::RUNNING)).ok());
  ASSERT_TRUE(state.Apply(Commit("jobs/000001", 99)).ok());
  EXPECT_EQ(job->generation, 1);
  ASSERT_EQ(job->members.size(), 2u);
  EXPECT_EQ(job->members[1].worker_id, "w1");
  EXPECT_EQ(job->members[1].incarnation, 101u);
  EXPECT_EQ(job->committed_step, 99);
  EXPECT_EQ(job->restarts, 0);

  ASSERT_TRUE(state.Apply(Generation("jobs/000001", 2, {"w0"}, true)).ok());
  EXPECT_EQ(job->restarts, 1);
  EXPECT_EQ(job->members.size(), 1u);

  ASSERT_TRUE(state.Apply(StateChanged("jobs/000001", v1::SUCCEEDED)).ok());
  EXPECT_TRUE(job->finished());
  EXPECT_EQ(job->end_time, absl::FromUnixSeconds(9));
  EXPECT_TRUE(job->members.empty());
}

TEST(CoordinatorStateTest, RefusesUpdatesThatCannotFollow) {
  CoordinatorState state;
  ASSERT_TRUE(state.Apply(Created("jobs/1", "req")).ok());
  // A second job with the same name or request id.
  EXPECT_EQ(state.Apply(Created("jobs/1")).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(state.Apply(Created("jobs/2", "req")).code(),
            absl::StatusCode::kAlreadyExists);
  // Unknown job.
  EXPECT_EQ(state.Apply(Commit("jobs/9", 1)).code(),
            absl::StatusCode::kNotFound);
  // Generations only increase; commits only move forward.
  ASSERT_TRUE(state.Apply(Generation("jobs/1", 3, {"w0"})).ok());
  EXPECT_EQ(state.Apply(Generation("jobs/1", 3, {"w0"})).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(state.Apply(Commit("jobs/1", 10)).ok());
  EXPECT_EQ(state.Apply(Commit("jobs/1", 10)).code(),
            absl::StatusCode::kFailedPrecondition);
  // Ranks must be 0..W-1 in order.
  internal::Update bad_ranks = Generation("jobs/1", 4, {"a", "b"});
  bad_ranks.mutable_generation_started()->mutable_members(1)->set_rank(5);
  EXPECT_EQ(state.Apply(bad_ranks).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state.FindJob("jobs/1")->generation, 3);  // unchanged
  // Nothing changes a finished job.
  ASSERT_TRUE(state.Apply(StateChanged("jobs/1", v1::CANCELLED)).ok());
  EXPECT_EQ(state.Apply(Commit("jobs/1", 11)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(state.Apply(StateChanged("jobs/1", v1::RUNNING)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(state.Apply(internal::Update()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CoordinatorStateTest, RejectedHeadFallsBackToThePreviousCommit) {
  CoordinatorState state;
  internal::Update created = Created("jobs/1");
  created.mutable_job_created()->mutable_spec()->mutable_checkpoint()->set_keep(
      3);
  ASSERT_TRUE(state.Apply(created).ok());
  ASSERT_TRUE(state.Apply(Generation("jobs/1", 1, {"w0"})).ok());
  internal::Update with_eval = Commit("jobs/1", 9);
  with_eval.mutable_checkpoint_committed()->set_eval_accuracy(0.5);
  ASSERT_TRUE(state.Apply(with_eval).ok());
  ASSERT_TRUE(state.Apply(Commit("jobs/1", 19)).ok());
  internal::Update later_eval = Commit("jobs/1", 29);
  later_eval.mutable_checkpoint_committed()->set_eval_accuracy(0.7);
  ASSERT_TRUE(state.Apply(later_eval).ok());
  const JobRecord& job = *state.FindJob("jobs/1");
  EXPECT_EQ(job.eval_step, 29);

  // Only the head can be rejected.
  EXPECT_EQ(state.Apply(Rejected("jobs/1", 19)).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(state.Apply(Rejected("jobs/1", 29)).ok());
  EXPECT_EQ(job.committed_step, 19);
  EXPECT_EQ(job.committed_path, "/ckpt/step-19");
  EXPECT_EQ(job.eval_step, 9);  // the newest evaluation still in the lineage
  EXPECT_EQ(job.eval_accuracy, 0.5);
  EXPECT_EQ(job.rejected_checkpoints, 1);

  // Training goes on from step 19; the branch is committed again.
  ASSERT_TRUE(state.Apply(Commit("jobs/1", 29)).ok());
  EXPECT_EQ(job.committed_step, 29);
  EXPECT_FALSE(job.eval_step == 29);

  // Walking back through every retained commit to the start.
  ASSERT_TRUE(state.Apply(Rejected("jobs/1", 29)).ok());
  ASSERT_TRUE(state.Apply(Rejected("jobs/1", 19)).ok());
  EXPECT_EQ(job.committed_step, 9);
  ASSERT_TRUE(state.Apply(Rejected("jobs/1", 9)).ok());
  EXPECT_EQ(job.committed_step, -1);
  EXPECT_TRUE(job.committed_path.empty());
  EXPECT_FALSE(job.eval_accuracy.has_value());
  EXPECT_EQ(state.Apply(Rejected("jobs/1", -1)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(CoordinatorStateTest, NoFallBackToTheStartPastRetention) {
  // keep = 2: after four commits only the last two are retained, so
  // rejecting both would silently throw the lineage away: refused.
  CoordinatorState state;
  internal::Update created = Created("jobs/1");
  created.mutable_job_created()->mutable_spec()->mutable_checkpoint()->set_keep(
      2);
  ASSERT_TRUE(state.Apply(created).ok());
  for (int64_t step : {9, 19, 29, 39}) {
    ASSERT_TRUE(state.Apply(Commit("jobs/1", step)).ok());
  }
  ASSERT_TRUE(state.Apply(Rejected("jobs/1", 39)).ok());
  EXPECT_EQ(state.FindJob("jobs/1")->committed_step, 29);
  const absl::Status refused = state.Apply(Rejected("jobs/1", 29));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_EQ(state.FindJob("jobs/1")->committed_step, 29);
}

TEST(CoordinatorStateTest, ResumesFromAHeldStateThatExtendsTheHead) {
  CoordinatorState state;
  const std::string name = "jobs/000001";
  ASSERT_TRUE(state.Apply(Created(name)).ok());
  ASSERT_TRUE(state.Apply(Generation(name, 1, {"w0", "w1"})).ok());
  ASSERT_TRUE(state.Apply(Commit(name, 99, 1)).ok());
  // w1 dies at step 130; w0 holds generation 1's state after step 129.
  ASSERT_TRUE(state.Apply(Generation(name, 2, {"w0"}, true)).ok());
  const JobRecord* job = state.FindJob(name);
  EXPECT_EQ(job->resume_step, 99);
  EXPECT_TRUE(IsContinuable(*job, 1));
  EXPECT_TRUE(IsContinuable(*job, 2));
  ASSERT_TRUE(state.Apply(Resumed(name, 2, 129, 1)).ok());
  EXPECT_EQ(job->resume_step, 129);
  EXPECT_EQ(job->committed_step, 99);
  // Once only per generation.
  EXPECT_TRUE(
      absl::IsFailedPrecondition(state.Apply(Resumed(name, 2, 140, 1))));
  // Generation 2 dies before it commits: 3 may go on from 2's state (which
  // extends 1's, which extends the head) or from 1's.
  ASSERT_TRUE(state.Apply(Generation(name, 3, {"w0", "w2"}, true)).ok());
  EXPECT_EQ(job->resume_step, 99);
  EXPECT_TRUE(IsContinuable(*job, 1));
  EXPECT_TRUE(IsContinuable(*job, 2));
  ASSERT_TRUE(state.Apply(Resumed(name, 3, 150, 2)).ok());
  // A commit makes every other generation's state stale.
  ASSERT_TRUE(state.Apply(Commit(name, 199, 3)).ok());
  EXPECT_FALSE(IsContinuable(*job, 1));
  EXPECT_FALSE(IsContinuable(*job, 2));
  EXPECT_TRUE(IsContinuable(*job, 3));
  ASSERT_TRUE(state.Apply(Generation(name, 4, {"w0"}, true)).ok());
  EXPECT_TRUE(
      absl::IsFailedPrecondition(state.Apply(Resumed(name, 4, 210, 2))));
  EXPECT_TRUE(absl::IsInvalidArgument(state.Apply(Resumed(name, 4, 199, 3))));
  EXPECT_TRUE(
      absl::IsFailedPrecondition(state.Apply(Resumed(name, 3, 210, 3))));
  EXPECT_EQ(job->resume_step, 199);  // the refusals changed nothing
  ASSERT_TRUE(state.Apply(Resumed(name, 4, 210, 3)).ok());
  EXPECT_EQ(job->resume_step, 210);
}

TEST(CoordinatorStateTest, RejectionMakesEveryHeldStateStale) {
  CoordinatorState state;
  const std::string name = "jobs/000001";
  ASSERT_TRUE(state.Apply(Created(name)).ok());
  ASSERT_TRUE(state.Apply(Generation(name, 1, {"w0", "w1"})).ok());
  ASSERT_TRUE(state.Apply(Commit(name, 99, 1)).ok());
  ASSERT_TRUE(state.Apply(Commit(name, 199, 1)).ok());
  ASSERT_TRUE(state.Apply(Generation(name, 2, {"w0"}, true)).ok());
  ASSERT_TRUE(state.Apply(Rejected(name, 199)).ok());
  const JobRecord* job = state.FindJob(name);
  EXPECT_EQ(job->resume_step, 99);
  EXPECT_TRUE(job->continuable_generations.empty());
  EXPECT_TRUE(
      absl::IsFailedPrecondition(state.Apply(Resumed(name, 2, 150, 1))));
  ASSERT_TRUE(state.Apply(Generation(name, 3, {"w0"}, true)).ok());
  EXPECT_TRUE(
      absl::IsFailedPrecondition(state.Apply(Resumed(name, 3, 150, 2))));
}

TEST(CoordinatorStateTest, ReplayingTheSameUpdatesGivesTheSameState) {
  const std::vector<internal::Update> journal = {
      Created("jobs/1", "a"),
      Created("jobs/2", "b"),
      Generation("jobs/1", 1, {"w0", "w1"}),
      StateChanged("jobs/1", v1::RUNNING),
      Commit("jobs/1", 5),
      Commit("jobs/1", 8),
      Rejected("jobs/1", 8),
      Generation("jobs/1", 2, {"w1"}, true),
      StateChanged("jobs/2", v1::CANCELLED)};
  CoordinatorState live, replayed;
  for (const auto& update : journal) ASSERT_TRUE(live.Apply(update).ok());
  for (const auto& update : journal) ASSERT_TRUE(replayed.Apply(update).ok());
  ASSERT_EQ(live.jobs().size(), replayed.jobs().size());
  for (const auto& [name, job] : live.jobs()) {
    const JobRecord* other = replayed.FindJob(name);
    ASSERT_NE(other, nullptr);
    EXPECT_EQ(job.state, other->state);
    EXPECT_EQ(job.generation, other->generation);
    EXPECT_EQ(job.committed_step, other->committed_step);
    EXPECT_EQ(job.restarts, other->restarts);
    EXPECT_EQ(job.members.size(), other->members.size());
  }
}

}  // namespace
}  // namespace podtrain::coordinator
