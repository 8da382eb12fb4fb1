// Property tests of podtrain's promise at the sampler level: a job that is
// preempted, crashes, restarts from its last committed checkpoint and changes
// its world size any number of times still trains on every example exactly
// once per epoch in its committed lineage. Each case simulates a whole job
// with seeded randomness; the audit counts every example id per epoch from
// what the ranks were assigned, step by step.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"

namespace podtrain::sampler {
namespace {

// What one rank trained on at one step: the ids and the stream positions
// they came from (positions tell the audit which epoch an id belongs to).
struct RankWork {
  PositionRange positions;
  std::vector<int64_t> ids;
};
using StepWork = std::vector<RankWork>;

struct AuditResult {
  int64_t complete_epochs = 0;
  int64_t missing = 0;
  int64_t duplicates = 0;
};

// Counts, for every epoch, how often each id was trained on in `lineage`.
// A complete epoch must hold every id exactly once; the trailing partial
// epoch must hold no id twice.
AuditResult Audit(const std::vector<StepWork>& lineage, int64_t n) {
  std::map<int64_t, std::vector<int>> counts;  // epoch -> per-id count
  int64_t end_position = 0;
  for (const StepWork& step : lineage) {
    for (const RankWork& rank : step) {
      for (size_t k = 0; k < rank.ids.size(); ++k) {
        const int64_t epoch = (rank.positions.begin + k) / n;
        auto& epoch_counts = counts[epoch];
        if (epoch_counts.empty()) epoch_counts.assign(n, 0);
        epoch_counts[rank.ids[k]]++;
      }
      end_position = std::max(end_position, rank.positions.end);
    }
  }
  AuditResult result;
  result.complete_epochs = end_position / n;
  for (const auto& [epoch, epoch_counts] : counts) {
    const bool complete = epoch < result.complete_epochs;
    for (int c : epoch_counts) {
      if (c > 1) result.duplicates += c - 1;
      if (complete && c == 0) result.missing++;
    }
  }
  return result;
}

StepWork TrainStep(const StreamSampler& sampler, int64_t batch, int64_t step,
                   int64_t world) {
  StepWork work;
  for (int64_t rank = 0; rank < world; ++rank) {
    RankWork rank_work;
    rank_work.positions = *RankPositions(batch, step, world, rank);
    rank_work.ids = *RankExampleIds(sampler, batch, step, world, rank);
    work.push_back(std::move(rank_work));
  }
  return work;
}

struct JobCase {
  std::vector<int64_t> shards;
  int64_t window = 0;
  int64_t batch = 0;
  int64_t total_steps = 0;
  uint64_t seed = 0;
};

JobCase RandomJob(std::mt19937_64& rng) {
  JobCase job;
  const int num_shards = 1 + rng() % 12;
  for (int s = 0; s < num_shards; ++s) job.shards.push_back(rng() % 400);
  job.shards[rng() % num_shards] += 1;  // never empty
  int64_t n = 0;
  for (int64_t size : job.shards) n += size;
  job.window = rng() % (num_shards + 1);  // 0 = global
  job.batch = 1 + rng() % std::min<int64_t>(n, 300);
  // 1 to 4.5 epochs, ending mid-epoch as often as not.
  const double epochs = 1.0 + (rng() % 36) / 10.0;
  job.total_steps = std::max<int64_t>(1, epochs * n / job.batch);
  job.seed = rng();
  return job;
}

// Runs a job to completion through random preemptions, crashes and world
// changes; returns its committed lineage (one StepWork per committed step).
// Log lines describe every event so a failure can be replayed by seed.
std::vector<StepWork> RunWithFailures(const JobCase& job, std::mt19937_64& rng,
                                      std::string* log) {
  auto sampler = *StreamSampler::Create(
      job.shards, {.seed = job.seed, .window_shards = job.window});
  std::vector<StepWork> lineage;  // committed steps, in order
  std::vector<StepWork> pending;  // done since the last commit
  const int64_t max_world = std::min<int64_t>(job.batch, 9);
  while (static_cast<int64_t>(lineage.size()) < job.total_steps) {
    // A new generation: any world size, resume right after the commit.
    const int64_t world = 1 + rng() % max_world;
    const int64_t interval = 1 + rng() % 5;
    const int64_t lifetime = 1 + rng() % 12;  // steps until the next failure
    const bool preempted = rng() % 2;         // SIGTERM: emergency checkpoint
    int64_t step = lineage.size();
    *log += " gen(world=" + std::to_string(world) +
            ",from=" + std::to_string(step) + ")";
    pending.clear();
    for (int64_t k = 0; k < lifetime && step < job.total_steps; ++k, ++step) {
      pending.push_back(TrainStep(*sampler, job.batch, step, world));
      const bool last_step = step + 1 == job.total_steps;
      if ((step + 1) % interval == 0 || last_step) {
        lineage.insert(lineage.end(), pending.begin(), pending.end());
        pending.clear();
      }
    }
    if (preempted && !pending.empty()) {
      *log += " preempt@" + std::to_string(step);
      lineage.insert(lineage.end(), pending.begin(), pending.end());
    } else if (!pending.empty()) {
      *log += " crash@" + std::to_string(step) + "(lost " +
              std::to_string(pending.size()) + ")";
    }
  }
  return lineage;
}

TEST(ExactlyOnceTest, RandomJobsThroughPreemptionsCrashesAndWorldChanges) {
  std::mt19937_64 rng(20261123);
  for (int trial = 0; trial < 500; ++trial) {
    const JobCase job = RandomJob(rng);
    std::string log;
    const std::vector<StepWork> lineage = RunWithFailures(job, rng, &log);
    ASSERT_EQ(static_cast<int64_t>(lineage.size()), job.total_steps);
    int64_t n = 0;
    for (int64_t size : job.shards) n += size;
    const AuditResult audit = Audit(lineage, n);
    EXPECT_EQ(audit.missing, 0) << "trial " << trial << ":" << log;
    EXPECT_EQ(audit.duplicates, 0) << "trial " << trial << ":" << log;
    EXPECT_EQ(audit.complete_epochs, job.total_steps * job.batch / n);
  }
}

// The same job with and without failures trains on the same examples in the
// same order, step by step (what makes bitwise determinism possible).
TEST(ExactlyOnceTest, FailuresDoNotChangeTheLineage) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 30; ++trial) {
    const JobCase job = RandomJob(rng);
    std::string log;
    const auto chaotic = RunWithFailures(job, rng, &log);
    auto sampler = *StreamSampler::Create(
        job.shards, {.seed = job.seed, .window_shards = job.window});
    for (int64_t step = 0; step < job.total_steps; ++step) {
      std::vector<int64_t> clean =
          TrainStep(*sampler, job.batch, step, 1)[0].ids;
      std::vector<int64_t> seen;
      for (const RankWork& rank : chaotic[step]) {
        seen.insert(seen.end(), rank.ids.begin(), rank.ids.end());
      }
      ASSERT_EQ(seen, clean) << "trial " << trial << " step " << step << log;
    }
  }
}

// The audit is not vacuous: a loader that restarts its epoch after a failure
// (as torch's DistributedSampler does) is caught with duplicates.
TEST(ExactlyOnceTest, AuditCatchesALoaderThatRestartsTheEpoch) {
  auto sampler = *StreamSampler::Create({500}, {.seed = 1});
  const int64_t batch = 50;
  std::vector<StepWork> lineage;
  // Steps 0-3 committed, then a restart that replays the epoch from its
  // start at step 4 instead of continuing at position 200.
  for (int64_t step = 0; step < 4; ++step) {
    lineage.push_back(TrainStep(*sampler, batch, step, 2));
  }
  for (int64_t replay = 0; replay < 10; ++replay) {
    StepWork work = TrainStep(*sampler, batch, replay, 2);
    for (RankWork& rank : work) {  // positions as the buggy loader claims
      rank.positions.begin += 4 * batch;
      rank.positions.end += 4 * batch;
    }
    lineage.push_back(work);
  }
  const AuditResult audit = Audit(lineage, 500);
  EXPECT_EQ(audit.duplicates, 200);
  EXPECT_EQ(audit.missing, 200);
}

}  // namespace
}  // namespace podtrain::sampler
