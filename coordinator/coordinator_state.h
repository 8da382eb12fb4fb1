// The coordinator's durable state as plain data, changed only by Apply().
//
// Glossary:
//   job            a training job ("jobs/000001"): its spec, its state, the
//                  dataset shape its data order depends on.
//   generation     one membership of a job's world (members with ranks);
//                  numbered 1, 2, ... per job. Every membership change starts
//                  a new generation.
//   committed      the newest checkpoint every rank of a generation made
//                  durable and the coordinator recorded: the head of the
//                  job's committed lineage. Training resumes after it.
//   rejected       a head that a worker could not load (corrupt, missing):
//                  it leaves the lineage and the previous commit is the head.
//   resumed        a generation that continues from the model its ranks
//                  held in memory (trained by an earlier generation up to
//                  some step after the head) instead of from the head.
//
// Example: JobCreated(jobs/1) -> GenerationStarted(jobs/1, 1, [w0, w1]) ->
// JobStateChanged(RUNNING) -> CheckpointCommitted(step 99) -> (w1's lease
// expires) GenerationStarted(jobs/1, 2, [w0]) -> ... -> JobStateChanged
// (SUCCEEDED).
//
// Apply refuses an update that cannot follow the current state (an unknown
// job, a generation that does not increase, a commit that goes backwards, a
// change to a finished job) with an error and changes nothing: replaying a
// journal that holds such an update means the journal is not ours to trust.
//
// Thread-safety: thread-compatible; the coordinator guards it with its mutex.

#ifndef PODTRAIN_COORDINATOR_COORDINATOR_STATE_H_
#define PODTRAIN_COORDINATOR_COORDINATOR_STATE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/coordinator_state.pb.h"
#include "proto/job.pb.h"

namespace podtrain::coordinator {

struct Member {
  std::string worker_id;
  uint64_t incarnation = 0;
  int32_t rank = 0;
};

struct JobRecord {
  std::string name;
  std::string request_id;
  v1::JobSpec spec;
  std::vector<int64_t> shard_sizes;
  uint64_t dataset_fingerprint = 0;

  v1::JobState state = v1::QUEUED;
  std::string state_message;
  absl::Time create_time;
  absl::Time end_time = absl::InfinitePast();

  int64_t generation = 0;       // 0: no world has formed yet
  std::vector<Member> members;  // of the current generation, by rank
  int32_t restarts = 0;

  int64_t committed_step = -1;  // -1: nothing committed, start from scratch
  std::string committed_path;
  // The newest evaluation committed with a checkpoint, and its step.
  std::optional<double> eval_accuracy;
  int64_t eval_step = -1;
  // The lineage's newest commits, oldest first, ending with the head
  // (committed_step): where a rejected head falls back to. Bounded by the
  // spec's checkpoint retention, as older checkpoints are deleted anyway.
  struct Commit {
    int64_t step = -1;
    std::string path;
    std::optional<double> eval_accuracy;
  };
  std::vector<Commit> recent_commits;
  int64_t lineage_commits = 0;  // commits in the lineage, rejected ones out
  int32_t rejected_checkpoints = 0;

  // The step the current generation trains after: the head when it started
  // (or after a rejection), or the step of the held state it resumed from.
  int64_t resume_step = -1;
  // Generations whose state (at any step they trained) extends the head:
  // those started since the head was committed, and the one that committed
  // it. A commit or a rejection moves the head and resets this.
  std::vector<int64_t> continuable_generations;

  int64_t examples_per_epoch() const;
  bool finished() const;
};

bool IsTerminal(v1::JobState state);

bool IsContinuable(const JobRecord& job, int64_t generation);

class CoordinatorState {
 public:
  // Applies one update; on error the state is unchanged.
  absl::Status Apply(const internal::Update& update);

  // nullptr if there is no such job.
  const JobRecord* FindJob(const std::string& name) const;
  const JobRecord* FindJobByRequestId(const std::string& request_id) const;

  // Jobs in creation order (names are assigned in increasing order).
  const std::map<std::string, JobRecord>& jobs() const { return jobs_; }

  // How many jobs were ever created: the next job's number is this + 1.
  int64_t jobs_created() const { return jobs_created_; }

 private:
  absl::Status ApplyJobCreated(const internal::JobCreated& created,
                               absl::Time time);
  absl::Status ApplyJobStateChanged(const internal::JobStateChanged& changed,
                                    absl::Time time);
  absl::Status ApplyGenerationStarted(
      const internal::GenerationStarted& started);
  absl::Status ApplyCheckpointCommitted(
      const internal::CheckpointCommitted& committed);
  absl::Status ApplyGenerationResumed(
      const internal::GenerationResumed& resumed);
  absl::Status ApplyCheckpointRejected(
      const internal::CheckpointRejected& rejected);
  absl::StatusOr<JobRecord*> MutableLiveJob(const std::string& name);

  std::map<std::string, JobRecord> jobs_;
  absl::flat_hash_map<std::string, std::string> job_by_request_id_;
  int64_t jobs_created_ = 0;
};

}  // namespace podtrain::coordinator

#endif  // PODTRAIN_COORDINATOR_COORDINATOR_STATE_H_
