#include "cli/audit.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "coordinator/journal.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"
#include "worker/consumption_log.h"

namespace podtrain::cli {
namespace {

constexpr int64_t kBatch = 10;
const std::vector<int64_t> kShards = {25, 25};  // N = 50

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TEST_TMPDIR");
    dir_ = std::string(base ? base : "/tmp") + "/" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::system(("rm -rf '" + dir_ + "' && mkdir -p '" + dir_ + "'").c_str());
    journal_ = *coordinator::Journal::Open(dir_ + "/journal.db");
    internal::Update created;
    created.mutable_job_created()->set_name("jobs/000001");
    created.mutable_job_created()->mutable_spec()->set_global_batch(kBatch);
    created.mutable_job_created()
        ->mutable_spec()
        ->mutable_checkpoint()
        ->set_directory(dir_ + "/ckpt");
    for (int64_t size : kShards) {
      created.mutable_job_created()->add_shard_sizes(size);
    }
    Append(created);
    sampler_ = *sampler::StreamSampler::Create(kShards, {.seed = 3});
  }

  void Append(const internal::Update& update) {
    ASSERT_TRUE(journal_->Append(update).ok());
  }
  void Generation(int64_t generation, int world) {
    internal::Update update;
    auto* started = update.mutable_generation_started();
    started->set_name("jobs/000001");
    started->set_generation(generation);
    for (int rank = 0; rank < world; ++rank) {
      auto* member = started->add_members();
      member->set_worker_id("w" + std::to_string(rank));
      member->set_rank(rank);
    }
    Append(update);
  }
  void Commit(int64_t step, int64_t generation) {
    internal::Update update;
    update.mutable_checkpoint_committed()->set_name("jobs/000001");
    update.mutable_checkpoint_committed()->set_step(step);
    update.mutable_checkpoint_committed()->set_generation(generation);
    Append(update);
  }
  // Generation `generation` continues from `from_generation`'s model held
  // after `step`, not from the checkpoint.
  void Resumed(int64_t generation, int64_t step, int64_t from_generation) {
    internal::Update update;
    auto* resumed = update.mutable_generation_resumed();
    resumed->set_name("jobs/000001");
    resumed->set_generation(generation);
    resumed->set_step(step);
    resumed->set_from_generation(from_generation);
    resumed->set_worker_id("w0");
    Append(update);
  }
  // What a correct worker of `world` ranks logs for steps [from, to).
  void Train(int64_t generation, int world, int64_t from, int64_t to,
             int64_t data_offset_steps = 0, int ranks_logging = -1) {
    for (int rank = 0; rank < (ranks_logging < 0 ? world : ranks_logging);
         ++rank) {
      auto writer =
          *worker::ConsumptionLogWriter::Open(worker::ConsumptionLogPath(
              dir_ + "/ckpt/000001", "w" + std::to_string(rank), generation));
      for (int64_t step = from; step < to; ++step) {
        worker::ConsumedStep record;
        record.generation = generation;
        record.step = step;
        record.rank = rank;
        record.world_size = world;
        record.ids = *sampler::RankExampleIds(
            *sampler_, kBatch, step - data_offset_steps, world, rank);
        ASSERT_TRUE(writer->Append(record).ok());
      }
    }
  }
  AuditReport Run() {
    AuditOptions options;
    options.journal_path = dir_ + "/journal.db";
    options.job = "jobs/000001";
    auto report = AuditJob(options);
    EXPECT_TRUE(report.ok()) << report.status();
    return *report;
  }

  std::string dir_;
  std::unique_ptr<coordinator::Journal> journal_;
  std::unique_ptr<sampler::StreamSampler> sampler_;
};

TEST_F(AuditTest, LineageThroughACrashAndAWorldChangeIsExact) {
  Generation(1, 2);
  Train(1, 2, 0, 7);  // steps 5 and 6 are lost in the crash
  Commit(4, 1);
  Generation(2, 3);
  Train(2, 3, 5, 15);
  Commit(9, 2);
  Commit(14, 2);
  const AuditReport report = Run();
  EXPECT_TRUE(report.exact()) << FormatAuditReport(report);
  EXPECT_EQ(report.lineage_steps, 15);
  EXPECT_EQ(report.generations, 2);
  ASSERT_EQ(report.epochs.size(), 3u);  // 150 positions = 3 epochs of 50
  for (const EpochAudit& epoch : report.epochs) {
    EXPECT_TRUE(epoch.complete);
    EXPECT_EQ(epoch.examples_seen, 50);
  }
  const std::string text = FormatAuditReport(report);
  EXPECT_NE(text.find("audit job=jobs/000001 epochs=3 steps=15 missing=0 "
                      "duplicates=0 problems=0 EXACT"),
            std::string::npos)
      << text;
}

TEST_F(AuditTest, ARejectedCheckpointsBranchIsNotInTheLineage) {
  Generation(1, 2);
  Train(1, 2, 0, 5);  // steps 5-9 of this branch left no usable record
  Commit(4, 1);
  Commit(9, 1);
  internal::Update rejected;
  rejected.mutable_checkpoint_rejected()->set_name("jobs/000001");
  rejected.mutable_checkpoint_rejected()->set_step(9);
  rejected.mutable_checkpoint_rejected()->set_reason("DATA_LOSS: corrupt");
  Append(rejected);
  // Training resumed after step 4; an emergency checkpoint at step 7.
  Generation(2, 2);
  Train(2, 2, 5, 15);
  Commit(7, 2);
  Commit(14, 2);
  const AuditReport report = Run();
  EXPECT_TRUE(report.exact()) << FormatAuditReport(report);
  EXPECT_EQ(report.lineage_steps, 15);
  EXPECT_EQ(report.commits, 3);  // 4, 7 and 14: not the rejected 9
}

TEST_F(AuditTest, ALoaderThatRestartsItsEpochIsCaught) {
  Generation(1, 2);
  Train(1, 2, 0, 3);
  Commit(2, 1);
  // Generation 2 resumes at step 3 (position 30, mid-epoch 0) but, like a
  // loader that restarts its epoch, reads the data of steps 0, 1, ...
  Generation(2, 2);
  Train(2, 2, 3, 10, /*data_offset_steps=*/3);
  Commit(9, 2);
  const AuditReport report = Run();
  EXPECT_FALSE(report.exact());
  // Epoch 0's positions 30-49 re-read positions 0-19: 20 duplicates, and
  // the 20 examples at positions 20-39 of the order never come.
  ASSERT_GE(report.epochs.size(), 1u);
  EXPECT_EQ(report.epochs[0].duplicates, 20) << FormatAuditReport(report);
  EXPECT_EQ(report.epochs[0].missing, 20);
  EXPECT_NE(FormatAuditReport(report).find("FAILED"), std::string::npos);
}

TEST_F(AuditTest, MissingRecordsAreProblemsNotSilentPasses) {
  Generation(1, 2);
  Train(1, 2, 0, 5, 0, /*ranks_logging=*/1);  // rank 1 never logged
  Commit(4, 1);
  const AuditReport report = Run();
  EXPECT_FALSE(report.exact());
  ASSERT_EQ(report.problems.size(), 5u);
  EXPECT_NE(report.problems[0].find("no record of rank 1 of 2"),
            std::string::npos)
      << report.problems[0];
}

TEST_F(AuditTest, AResumeFromHeldStateTakesTheEarlierGenerationsSteps) {
  Generation(1, 2);
  Train(1, 2, 0, 3);
  // Step 3 of generation 1 died with its world: logged (here with the
  // wrong data, so counting it would show) but never part of the lineage.
  Train(1, 2, 3, 4, /*data_offset_steps=*/3);
  Commit(1, 1);
  // The survivor held generation 1's model after step 2.
  Generation(2, 1);
  Resumed(2, 2, 1);
  Train(2, 1, 3, 10);
  Commit(9, 2);
  const AuditReport report = Run();
  EXPECT_TRUE(report.exact()) << FormatAuditReport(report);
  EXPECT_EQ(report.lineage_steps, 10);
  EXPECT_EQ(report.commits, 2);
  EXPECT_EQ(report.generations, 2);
  ASSERT_EQ(report.epochs.size(), 2u);
  for (const EpochAudit& epoch : report.epochs) {
    EXPECT_TRUE(epoch.complete);
    EXPECT_EQ(epoch.examples_seen, 50);
  }
}

TEST_F(AuditTest, AResumedRangeWithoutRecordsIsAProblem) {
  Generation(1, 2);
  Train(1, 2, 0, 2);  // step 2, after the commit, left no record
  Commit(1, 1);
  Generation(2, 1);
  Resumed(2, 2, 1);
  Train(2, 1, 2, 10);  // generation 2's own step 2 does not stand in for it
  Commit(9, 2);
  const AuditReport report = Run();
  EXPECT_FALSE(report.exact());
  ASSERT_EQ(report.problems.size(), 1u) << FormatAuditReport(report);
  EXPECT_NE(report.problems[0].find("step 2: no rank of generation 1"),
            std::string::npos)
      << report.problems[0];
  EXPECT_EQ(report.epochs[0].missing, 10);
}

TEST_F(AuditTest, AChainOfResumesIsFollowedBackToTheCheckpoint) {
  Generation(1, 2);
  Train(1, 2, 0, 4);
  Train(1, 2, 4, 5, /*data_offset_steps=*/4);  // lost with generation 1
  Commit(1, 1);
  Generation(2, 1);
  Resumed(2, 3, 1);
  Train(2, 1, 4, 7);
  Train(2, 1, 7, 8, /*data_offset_steps=*/7);  // lost with generation 2
  // Generation 2 never committed; 3 goes on from its state after step 6.
  Generation(3, 2);
  Resumed(3, 6, 2);
  Train(3, 2, 7, 12);
  Commit(11, 3);
  const AuditReport report = Run();
  EXPECT_TRUE(report.exact()) << FormatAuditReport(report);
  EXPECT_EQ(report.lineage_steps, 12);
  EXPECT_EQ(report.commits, 2);
  EXPECT_EQ(report.generations, 3);
}

TEST_F(AuditTest, ARestartFromTheCheckpointDropsTheHeldStatesBranch) {
  Generation(1, 2);
  Train(1, 2, 0, 5);
  Commit(1, 1);
  Generation(2, 1);
  Resumed(2, 3, 1);
  Train(2, 1, 4, 7);  // dies before it commits
  // Generation 3 loads the checkpoint of step 1: generation 1's steps 2-4
  // and 2's steps 4-6 are an abandoned branch, logged for the very stream
  // positions generation 3 trains again.
  Generation(3, 2);
  Train(3, 2, 2, 10);
  Commit(9, 3);
  const AuditReport report = Run();
  EXPECT_TRUE(report.exact()) << FormatAuditReport(report);
  EXPECT_EQ(report.lineage_steps, 10);
  EXPECT_EQ(report.commits, 2);
  EXPECT_EQ(report.generations, 2);  // 1 (steps 0-1) and 3
  ASSERT_EQ(report.epochs.size(), 2u);
  for (const EpochAudit& epoch : report.epochs) {
    EXPECT_EQ(epoch.examples_seen, 50);
    EXPECT_EQ(epoch.duplicates, 0);
  }
}

TEST_F(AuditTest, ALineageTheJournalCannotExplainIsAProblem) {
  Generation(1, 2);
  Train(1, 2, 0, 6);
  Commit(1, 1);
  Generation(2, 2);
  Resumed(2, 5, 1);
  // A commit of a step before generation 2's own start: the journal
  // accepts it (it follows the head), but no generation trained it so.
  Commit(3, 2);
  const AuditReport report = Run();
  EXPECT_FALSE(report.exact());
  ASSERT_EQ(report.problems.size(), 1u) << FormatAuditReport(report);
  EXPECT_NE(report.problems[0].find("trained only after step 5"),
            std::string::npos)
      << report.problems[0];
  EXPECT_EQ(report.lineage_steps, 4);
  EXPECT_EQ(report.epochs[0].examples_seen, 0);
}

TEST_F(AuditTest, ACommitByAGenerationThatNeverStartedIsAProblem) {
  Generation(1, 1);
  Train(1, 1, 0, 5);
  Commit(1, 1);
  Commit(4, 7);
  const AuditReport report = Run();
  EXPECT_FALSE(report.exact());
  ASSERT_EQ(report.problems.size(), 1u) << FormatAuditReport(report);
  EXPECT_NE(report.problems[0].find("generation 7, which never started"),
            std::string::npos)
      << report.problems[0];
}

TEST_F(AuditTest, UnknownJobOrLogDirectoryIsAClearError) {
  AuditOptions options;
  options.journal_path = dir_ + "/journal.db";
  options.job = "jobs/000009";
  EXPECT_EQ(AuditJob(options).status().code(), absl::StatusCode::kNotFound);
  options.job = "jobs/000001";
  options.consumed_dir = dir_ + "/nowhere";
  auto report = AuditJob(options);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(report.status().message().find("nowhere"), std::string::npos);
}

}  // namespace
}  // namespace podtrain::cli
