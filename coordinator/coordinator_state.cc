#include "coordinator/coordinator_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace podtrain::coordinator {

int64_t JobRecord::examples_per_epoch() const {
  int64_t total = 0;
  for (int64_t size : shard_sizes) total += size;
  return total;
}

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED ||
         state == v1::CANCELLED;
}

bool JobRecord::finished() const { return IsTerminal(state); }

bool IsContinuable(const JobRecord& job, int64_t generation) {
  return std::find(job.continuable_generations.begin(),
                   job.continuable_generations.end(),
                   generation) != job.continuable_generations.end();
}

absl::Status CoordinatorState::Apply(const internal::Update& update) {
  const absl::Time time = absl::FromUnixMicros(update.time_micros());
  switch (update.kind_case()) {
    case internal::Update::kJobCreated:
      return ApplyJobCreated(update.job_created(), time);
    case internal::Update::kJobStateChanged:
      return ApplyJobStateChanged(update.job_state_changed(), time);
    case internal::Update::kGenerationStarted:
      return ApplyGenerationStarted(update.generation_started());
    case internal::Update::kCheckpointCommitted:
      return ApplyCheckpointCommitted(update.checkpoint_committed());
    case internal::Update::kCheckpointRejected:
      return ApplyCheckpointRejected(update.checkpoint_rejected());
    case internal::Update::kGenerationResumed:
      return ApplyGenerationResumed(update.generation_resumed());
    case internal::Update::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("update has no kind");
}

const JobRecord* CoordinatorState::FindJob(const std::string& name) const {
  auto it = jobs_.find(name);
  return it == jobs_.end() ? nullptr : &it->second;
}

const JobRecord* CoordinatorState::FindJobByRequestId(
    const std::string& request_id) const {
  auto it = job_by_request_id_.find(request_id);
  return it == job_by_request_id_.end() ? nullptr : FindJob(it->second);
}

absl::StatusOr<JobRecord*> CoordinatorState::MutableLiveJob(
    const std::string& name) {
  auto it = jobs_.find(name);
  if (it == jobs_.end()) {
    return absl::NotFoundError(absl::StrCat("no job ", name));
  }
  if (it->second.finished()) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " has ended (", v1::JobState_Name(it->second.state), ")"));
  }
  return &it->second;
}

absl::Status CoordinatorState::ApplyJobCreated(
    const internal::JobCreated& created, absl::Time time) {
  if (created.name().empty() || jobs_.count(created.name()) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("job name '", created.name(), "' is empty or taken"));
  }
  if (!created.request_id().empty() &&
      job_by_request_id_.count(created.request_id()) > 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "request_id ", created.request_id(), " already made a job"));
  }
  JobRecord job;
  job.name = created.name();
  job.request_id = created.request_id();
  job.spec = created.spec();
  job.shard_sizes.assign(created.shard_sizes().begin(),
                         created.shard_sizes().end());
  job.dataset_fingerprint = created.dataset_fingerprint();
  job.create_time = time;
  if (!job.request_id.empty()) job_by_request_id_[job.request_id] = job.name;
  jobs_.emplace(job.name, std::move(job));
  ++jobs_created_;
  return absl::OkStatus();
}

absl::Status CoordinatorState::ApplyJobStateChanged(
    const internal::JobStateChanged& changed, absl::Time time) {
  ASSIGN_OR_RETURN(JobRecord * job, MutableLiveJob(changed.name()));
  if (changed.state() == v1::JOB_STATE_UNSPECIFIED) {
    return absl::InvalidArgumentError("job state must be specified");
  }
  job->state = changed.state();
  job->state_message = changed.message();
  if (job->finished()) {
    job->end_time = time;
    job->members.clear();
  }
  return absl::OkStatus();
}

absl::Status CoordinatorState::ApplyGenerationStarted(
    const internal::GenerationStarted& started) {
  ASSIGN_OR_RETURN(JobRecord * job, MutableLiveJob(started.name()));
  if (started.generation() <= job->generation) {
    return absl::FailedPreconditionError(
        absl::StrCat(started.name(), ": generation ", started.generation(),
                     " does not follow ", job->generation));
  }
  std::vector<Member> members;
  for (int i = 0; i < started.members_size(); ++i) {
    const auto& member = started.members(i);
    if (member.rank() != i) {
      return absl::InvalidArgumentError(
          absl::StrCat(started.name(), ": generation ", started.generation(),
                       " member ", i, " has rank ", member.rank()));
    }
    members.push_back({member.worker_id(), member.incarnation(), i});
  }
  job->generation = started.generation();
  job->members = std::move(members);
  if (started.counts_as_restart()) ++job->restarts;
  // It trains after the head, either from the checkpoint or from a held
  // state that extends the head: either way its own state extends it too.
  job->resume_step = job->committed_step;
  job->continuable_generations.push_back(started.generation());
  return absl::OkStatus();
}

absl::Status CoordinatorState::ApplyGenerationResumed(
    const internal::GenerationResumed& resumed) {
  ASSIGN_OR_RETURN(JobRecord * job, MutableLiveJob(resumed.name()));
  const std::string what =
      absl::StrCat(resumed.name(), ": generation ", resumed.generation(),
                   " resuming from generation ", resumed.from_generation(),
                   "'s step ", resumed.step());
  if (resumed.generation() != job->generation) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": the current generation is ", job->generation));
  }
  if (resumed.from_generation() >= resumed.generation() ||
      !IsContinuable(*job, resumed.from_generation())) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": that state does not extend the committed head (step ",
        job->committed_step, ")"));
  }
  if (job->resume_step != job->committed_step) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": it already resumed after step ", job->resume_step));
  }
  if (resumed.step() <= job->committed_step) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the step is not after the committed step ",
                     job->committed_step));
  }
  job->resume_step = resumed.step();
  return absl::OkStatus();
}

absl::Status CoordinatorState::ApplyCheckpointCommitted(
    const internal::CheckpointCommitted& committed) {
  ASSIGN_OR_RETURN(JobRecord * job, MutableLiveJob(committed.name()));
  if (committed.step() <= job->committed_step) {
    return absl::FailedPreconditionError(
        absl::StrCat(committed.name(), ": commit of step ", committed.step(),
                     " would go back from step ", job->committed_step));
  }
  job->committed_step = committed.step();
  job->committed_path = committed.path();
  // Only states that contain this commit extend the new head.
  job->continuable_generations = {committed.generation()};
  if (committed.has_eval_accuracy()) {
    job->eval_accuracy = committed.eval_accuracy();
    job->eval_step = committed.step();
  }
  JobRecord::Commit commit;
  commit.step = committed.step();
  commit.path = committed.path();
  if (committed.has_eval_accuracy()) {
    commit.eval_accuracy = committed.eval_accuracy();
  }
  job->recent_commits.push_back(std::move(commit));
  ++job->lineage_commits;
  // keep = 0 is the default retention, 3 (coordinator/job_spec.cc).
  const size_t keep =
      job->spec.checkpoint().keep() > 0 ? job->spec.checkpoint().keep() : 3;
  if (job->recent_commits.size() > keep) {
    job->recent_commits.erase(job->recent_commits.begin(),
                              job->recent_commits.end() - keep);
  }
  return absl::OkStatus();
}

absl::Status CoordinatorState::ApplyCheckpointRejected(
    const internal::CheckpointRejected& rejected) {
  ASSIGN_OR_RETURN(JobRecord * job, MutableLiveJob(rejected.name()));
  if (rejected.step() != job->committed_step || job->committed_step < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        rejected.name(), ": rejection of step ", rejected.step(),
        " but the head of the lineage is step ", job->committed_step));
  }
  if (job->recent_commits.size() < 2 && job->lineage_commits > 1) {
    // Older commits exist but their checkpoints are past retention: going
    // back to the start would silently throw away the whole lineage.
    return absl::FailedPreconditionError(
        absl::StrCat(rejected.name(), ": step ", rejected.step(),
                     " is the only retained commit of ", job->lineage_commits));
  }
  job->recent_commits.pop_back();
  --job->lineage_commits;
  ++job->rejected_checkpoints;
  // The previous commit becomes the head, and the newest evaluation is
  // the newest one at or before it.
  job->committed_step = -1;
  job->committed_path.clear();
  job->eval_accuracy.reset();
  job->eval_step = -1;
  if (!job->recent_commits.empty()) {
    job->committed_step = job->recent_commits.back().step;
    job->committed_path = job->recent_commits.back().path;
  }
  // Every held state may carry the rejected commit's steps: none is
  // trusted; the next generation trains again from the new head.
  job->continuable_generations.clear();
  job->resume_step = job->committed_step;
  for (auto it = job->recent_commits.rbegin(); it != job->recent_commits.rend();
       ++it) {
    if (it->eval_accuracy.has_value()) {
      job->eval_accuracy = it->eval_accuracy;
      job->eval_step = it->step;
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace podtrain::coordinator
