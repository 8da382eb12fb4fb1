#include "coordinator/coordinator.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "coordinator/job_spec.h"
#include "dataset/manifest.h"
#include "sampler/assignment.h"

namespace podtrain::coordinator {
namespace {

constexpr int32_t kDefaultPageSize = 50;
constexpr int32_t kMaxPageSize = 1000;
constexpr size_t kMaxEventsPerJob = 1000;
// Ids one NextAssignments call returns at most (but always one step's): a
// stream message stays ~1 MB at most, well under gRPC's 4 MB default limit.
constexpr int64_t kMaxIdsPerCall = int64_t{1} << 18;

absl::Status ShuttingDown() {
  return absl::UnavailableError("the coordinator is shutting down; retry");
}

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  google::protobuf::Timestamp timestamp;
  const int64_t micros = absl::ToUnixMicros(time);
  timestamp.set_seconds(micros / 1'000'000);
  timestamp.set_nanos(static_cast<int32_t>(micros % 1'000'000) * 1000);
  return timestamp;
}

}  // namespace

// ---------------------------------------------------------------------------
// Construction and recovery
// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    const CoordinatorOptions& options, Clock* clock) {
  if (options.journal_path.empty()) {
    return absl::InvalidArgumentError("journal_path: must be set");
  }
  if (options.lease <= options.heartbeat_interval) {
    return absl::InvalidArgumentError(
        "lease: must be longer than heartbeat_interval");
  }
  if (!(options.max_heartbeats_per_second >= 0)) {
    return absl::InvalidArgumentError(
        "max_heartbeats_per_second: must be >= 0 (0: no bound)");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Journal> journal,
                   Journal::Open(options.journal_path));
  auto coordinator = std::unique_ptr<Coordinator>(
      new Coordinator(options, clock, std::move(journal)));
  absl::MutexLock lock(&coordinator->mu_);
  RETURN_IF_ERROR(coordinator->Recover());
  coordinator->RefreshHeartbeatTiming();
  return coordinator;
}

Coordinator::Coordinator(const CoordinatorOptions& options, Clock* clock,
                         std::unique_ptr<Journal> journal)
    : options_(options),
      clock_(clock),
      metrics_(std::make_unique<CoordinatorMetrics>(
          options.metrics_registry != nullptr
              ? options.metrics_registry
              : std::make_shared<prometheus::Registry>())),
      journal_(std::move(journal)) {}

absl::Status Coordinator::Recover() {
  ASSIGN_OR_RETURN(const std::vector<internal::Update> updates,
                   journal_->ReadAll());
  for (size_t i = 0; i < updates.size(); ++i) {
    const absl::Status applied = state_.Apply(updates[i]);
    if (!applied.ok()) {
      return absl::DataLossError(absl::StrCat(
          "journal ", journal_->path(), ": update ", i + 1,
          " does not apply to the recovered state: ", applied.message()));
    }
    NoteLineageTime(updates[i]);
  }
  // Members of running generations get one lease, and at least the
  // recovery lease, to come back (they heartbeat with their incarnation and
  // keep training).
  const absl::Time now = clock_->Now();
  for (const auto& [name, job] : state_.jobs()) {
    if (job.finished()) continue;
    JobRuntime& runtime = Runtime(job);
    ResetProgress(runtime, job.members.size(),
                  std::max(job.committed_step, job.resume_step));
    for (size_t i = 0; i < job.members.size(); ++i) {
      const Member& member = job.members[i];
      Worker& worker = workers_[member.worker_id];
      worker.incarnation = member.incarnation;
      worker.lease = HeartbeatTiming().second;
      ExtendLease(worker,
                  now + std::max(worker.lease, options_.recovery_lease));
      worker.job = name;
      worker.member_index = static_cast<int32_t>(i);
    }
    ++worker_states_version_;
  }
  if (!updates.empty()) {
    LOG(INFO) << "recovered " << state_.jobs().size() << " jobs from "
              << updates.size() << " journal updates in " << journal_->path();
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Commit(internal::Update update) {
  update.set_time_micros(absl::ToUnixMicros(clock_->Now()));
  // Validate against the state first, so the journal never holds an update
  // that does not apply: apply to a copy, then log, then apply for real.
  CoordinatorState trial = state_;
  RETURN_IF_ERROR(trial.Apply(update));
  {
    ScopedTimer timer(&metrics_->journal_append());
    RETURN_IF_ERROR(journal_->Append(update).status());
  }
  state_ = std::move(trial);
  NoteLineageTime(update);
  ++version_;
  // Any durable change (a generation, a commit, a job's state) may be what
  // a blocked call waits for. Durable changes are rare; waking is cheap.
  WakeWaiters();
  return absl::OkStatus();
}

void Coordinator::NoteLineageTime(const internal::Update& update) {
  const absl::Time time = absl::FromUnixMicros(update.time_micros());
  if (update.has_checkpoint_committed()) {
    lineage_time_[update.checkpoint_committed().name()] = time;
  } else if (update.has_generation_started()) {
    lineage_time_.try_emplace(update.generation_started().name(), time);
  }
}

absl::Status Coordinator::SetJobState(const std::string& name,
                                      v1::JobState state,
                                      const std::string& message) {
  const JobRecord* job = state_.FindJob(name);
  const v1::JobState from = job->state;
  if (from == state && job->state_message == message) return absl::OkStatus();
  internal::Update update;
  auto* changed = update.mutable_job_state_changed();
  changed->set_name(name);
  changed->set_state(state);
  changed->set_message(message);
  RETURN_IF_ERROR(Commit(std::move(update)));
  LOG(INFO) << name << ": " << v1::JobState_Name(from) << " -> "
            << v1::JobState_Name(state) << (message.empty() ? "" : ": ")
            << message;
  v1::JobEvent event;
  event.mutable_state_changed()->set_from(from);
  event.mutable_state_changed()->set_to(state);
  AddEvent(*state_.FindJob(name), std::move(event));
  if (IsTerminal(state)) {
    for (auto& [id, worker] : workers_) {
      if (worker.job == name) {
        worker.job.clear();
        worker.finished_job = name;
      }
    }
    ++worker_states_version_;
  }
  return absl::OkStatus();
}

Coordinator::JobRuntime& Coordinator::Runtime(const JobRecord& job) {
  JobRuntime& runtime = runtime_[job.name];
  if (runtime.sampler == nullptr) {
    runtime.name = job.name;
    // Validated at CreateJob; recreated from the journaled shard sizes.
    auto sampler = sampler::StreamSampler::Create(
        job.shard_sizes, {.seed = job.spec.seed(),
                          .window_shards = job.spec.shuffle_window_shards()});
    CHECK(sampler.ok()) << job.name << ": " << sampler.status();
    runtime.sampler = std::move(*sampler);
    runtime.total_steps = TotalSteps(job.spec, job.examples_per_epoch());
  }
  return runtime;
}

void Coordinator::NoteProgress(JobRuntime& runtime, int32_t rank,
                               int64_t step) {
  int64_t& reported = runtime.reported_step[rank];
  if (step <= reported) return;
  const int64_t before = reported;
  reported = step;
  if (before != runtime.slowest || --runtime.at_slowest > 0) return;
  // The last rank at the minimum moved on (once per step of the world):
  // find the new minimum, and let the streams hand out what it allows.
  runtime.slowest = *std::min_element(runtime.reported_step.begin(),
                                      runtime.reported_step.end());
  runtime.at_slowest = std::count(runtime.reported_step.begin(),
                                  runtime.reported_step.end(), runtime.slowest);
  AssignmentsChanged(runtime, /*progress_only=*/true);
}

void Coordinator::ResetProgress(JobRuntime& runtime, size_t ranks,
                                int64_t step) {
  const auto every = [ranks](int64_t per_step) {
    return per_step <= 0 ? 1
                         : static_cast<int32_t>(std::max<int64_t>(
                               1, (static_cast<int64_t>(ranks) + per_step - 1) /
                                      per_step));
  };
  runtime.report_every_steps = every(options_.max_reports_per_step);
  runtime.message_every_steps =
      std::max(runtime.report_every_steps,
               every(options_.max_assignment_messages_per_step));
  // A rank's last report may be k - 1 steps old, and its assignments arrive
  // m at a time: m + k + 4 keeps its next step in hand with margin.
  runtime.lookahead_steps = std::max<int64_t>(
      options_.assignment_lookahead_steps,
      int64_t{runtime.message_every_steps} + runtime.report_every_steps + 4);
  runtime.reported_step.assign(ranks, step);
  runtime.slowest = step;
  runtime.at_slowest = ranks;
  AssignmentsChanged(runtime);
}

void Coordinator::WakeWaiters() {
  for (auto& [id, worker] : workers_) worker.membership_changed->SignalAll();
  for (auto& [name, runtime] : runtime_) {
    runtime.assignments_changed.SignalAll();
  }
  if (assignment_listener_) assignment_listener_("", kAnyChange);
}

void Coordinator::AssignmentsChanged(JobRuntime& runtime, bool progress_only) {
  runtime.assignments_changed.SignalAll();
  if (!assignment_listener_) return;
  int64_t horizon = kAnyChange;
  if (progress_only) {
    const JobRecord* job = state_.FindJob(runtime.name);
    if (job != nullptr) horizon = Horizon(*job, runtime);
  }
  assignment_listener_(runtime.name, horizon);
}

int64_t Coordinator::Horizon(const JobRecord& job,
                             const JobRuntime& runtime) const {
  return std::min(runtime.total_steps,
                  std::max(runtime.slowest, job.committed_step) + 1 +
                      runtime.lookahead_steps);
}

void Coordinator::SetAssignmentListener(
    std::function<void(const std::string& job, int64_t horizon)> listener) {
  absl::MutexLock lock(&mu_);
  assignment_listener_ = std::move(listener);
}

std::string Coordinator::WorkerJob(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  return it == workers_.end() ? "" : it->second.job;
}

// ---------------------------------------------------------------------------
// Public job API
// ---------------------------------------------------------------------------

absl::StatusOr<v1::Job> Coordinator::CreateJob(
    const v1::CreateJobRequest& request) {
  // A replay returns the job the first call made, even if the dataset or
  // the pool changed since.
  if (!request.request_id().empty()) {
    absl::MutexLock lock(&mu_);
    if (const JobRecord* existing =
            state_.FindJobByRequestId(request.request_id())) {
      return ToProto(*existing);
    }
  }
  ASSIGN_OR_RETURN(v1::JobSpec spec, NormalizeJobSpec(request.spec()));
  if (spec.shuffle_window_shards() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.shuffle_window_shards: must be >= 0 (0 = global shuffle), got ",
        spec.shuffle_window_shards()));
  }
  // The dataset is read outside the lock: it may be on a slow disk.
  absl::StatusOr<dataset::Manifest> manifest =
      dataset::ReadManifest(spec.dataset());
  if (!manifest.ok()) {
    return absl::Status(
        manifest.status().code(),
        absl::StrCat("spec.dataset: ", manifest.status().message()));
  }
  RETURN_IF_ERROR(ValidateJobSpecForDataset(spec, manifest->num_examples()));
  if (!spec.eval().dataset().empty()) {
    absl::StatusOr<dataset::Manifest> eval =
        dataset::ReadManifest(spec.eval().dataset());
    if (!eval.ok()) {
      return absl::Status(
          eval.status().code(),
          absl::StrCat("spec.eval.dataset: ", eval.status().message()));
    }
  }
  if (options_.max_pool_workers > 0 &&
      spec.min_workers() > options_.max_pool_workers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "spec.min_workers: ", spec.min_workers(),
        " workers can never be free at once: the pool has at most ",
        options_.max_pool_workers));
  }

  absl::MutexLock lock(&mu_);
  if (!request.request_id().empty()) {
    // A concurrent call with the same request_id may have won the race.
    if (const JobRecord* existing =
            state_.FindJobByRequestId(request.request_id())) {
      return ToProto(*existing);
    }
  }
  internal::Update update;
  auto* created = update.mutable_job_created();
  created->set_name(absl::StrFormat("jobs/%06d", state_.jobs_created() + 1));
  created->set_request_id(request.request_id());
  *created->mutable_spec() = spec;
  for (int64_t size : manifest->ShardSizes()) created->add_shard_sizes(size);
  created->set_dataset_fingerprint(manifest->Fingerprint());
  const std::string name = created->name();
  RETURN_IF_ERROR(Commit(std::move(update)));
  const JobRecord& job = *state_.FindJob(name);
  LOG(INFO) << name << ": created (" << job.examples_per_epoch()
            << " examples per epoch, " << Runtime(job).total_steps << " steps, "
            << spec.min_workers() << ".." << spec.max_workers() << " workers)";
  Reconcile();
  return ToProto(*state_.FindJob(name));
}

absl::StatusOr<v1::Job> Coordinator::GetJob(const std::string& name) {
  absl::MutexLock lock(&mu_);
  const JobRecord* job = state_.FindJob(name);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job named '", name, "'"));
  }
  return ToProto(*job);
}

absl::StatusOr<v1::ListJobsResponse> Coordinator::ListJobs(
    const v1::ListJobsRequest& request) {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be >= 0, got ", request.page_size()));
  }
  const int32_t page_size = request.page_size() == 0
                                ? kDefaultPageSize
                                : std::min(request.page_size(), kMaxPageSize);
  // The token is the name of the last job of the previous page; jobs are
  // listed newest first, i.e. in decreasing name order.
  std::string after;
  if (!request.page_token().empty()) {
    if (request.page_token().rfind("jobs/", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_token: '", request.page_token(),
                       "' was not issued by this server"));
    }
    after = request.page_token();
  }
  absl::MutexLock lock(&mu_);
  v1::ListJobsResponse response;
  const auto& jobs = state_.jobs();
  auto it = after.empty() ? jobs.end() : jobs.lower_bound(after);
  while (it != jobs.begin() && response.jobs_size() < page_size) {
    --it;
    *response.add_jobs() = ToProto(it->second);
  }
  if (it != jobs.begin()) {
    response.set_next_page_token(it->first);
  }
  return response;
}

absl::StatusOr<v1::Job> Coordinator::CancelJob(const std::string& name) {
  absl::MutexLock lock(&mu_);
  const JobRecord* job = state_.FindJob(name);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job named '", name, "'"));
  }
  if (job->finished()) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " has already ended (", v1::JobState_Name(job->state), ")"));
  }
  RETURN_IF_ERROR(SetJobState(name, v1::CANCELLED, "cancelled by request"));
  Reconcile();
  return ToProto(*state_.FindJob(name));
}

absl::StatusOr<std::vector<v1::JobEvent>> Coordinator::WaitForEvents(
    const std::string& name, int64_t after, absl::Time deadline,
    int64_t* next) {
  absl::MutexLock lock(&mu_);
  const JobRecord* job = state_.FindJob(name);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job named '", name, "'"));
  }
  JobRuntime& runtime = Runtime(*job);
  const auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return runtime.next_event - 1 > after || state_.FindJob(name)->finished() ||
           shutting_down_;
  };
  clock_->AwaitWithDeadline(&mu_, absl::Condition(&ready), deadline);
  if (shutting_down_) return ShuttingDown();
  std::vector<v1::JobEvent> events;
  *next = after;
  for (const auto& [seq, event] : runtime.events) {
    if (seq > after) {
      events.push_back(event);
      *next = seq;
    }
  }
  return events;
}

v1::Job Coordinator::ToProto(const JobRecord& job) const {
  v1::Job proto;
  proto.set_name(job.name);
  *proto.mutable_spec() = job.spec;
  proto.set_state(job.state);
  proto.set_state_message(job.state_message);
  *proto.mutable_create_time() = ToTimestamp(job.create_time);
  if (job.finished()) *proto.mutable_end_time() = ToTimestamp(job.end_time);
  proto.set_generation(job.generation);
  proto.set_world_size(static_cast<int32_t>(job.members.size()));
  proto.set_committed_step(job.committed_step);
  proto.set_restarts(job.restarts);
  proto.set_examples_per_epoch(job.examples_per_epoch());
  proto.set_total_steps(TotalSteps(job.spec, job.examples_per_epoch()));
  int64_t latest = job.committed_step;
  auto it = runtime_.find(job.name);
  if (it != runtime_.end()) {
    for (int64_t step : it->second.reported_step) {
      latest = std::max(latest, step);
    }
  }
  proto.set_latest_step(latest);
  // The newest evaluation: a reported one (soft) if newer than the one
  // committed with the lineage.
  if (it != runtime_.end() && it->second.eval_accuracy.has_value() &&
      it->second.eval_step > job.eval_step) {
    proto.set_eval_accuracy(*it->second.eval_accuracy);
    proto.set_eval_step(it->second.eval_step);
  } else if (job.eval_accuracy.has_value()) {
    proto.set_eval_accuracy(*job.eval_accuracy);
    proto.set_eval_step(job.eval_step);
  }
  return proto;
}

void Coordinator::AddEvent(const JobRecord& job, v1::JobEvent event) {
  JobRuntime& runtime = Runtime(job);
  *event.mutable_time() = ToTimestamp(clock_->Now());
  *event.mutable_job() = ToProto(job);
  runtime.events.emplace_back(runtime.next_event++, std::move(event));
  if (runtime.events.size() > kMaxEventsPerJob) runtime.events.pop_front();
  ++version_;
}

// ---------------------------------------------------------------------------
// Worker API
// ---------------------------------------------------------------------------

absl::StatusOr<Coordinator::Worker*> Coordinator::AuthenticWorker(
    const std::string& worker_id, uint64_t incarnation) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker '", worker_id,
                     "' is not registered (or its lease expired): "
                     "register again"));
  }
  if (it->second.incarnation != incarnation) {
    return absl::AbortedError(
        absl::StrCat("worker '", worker_id, "': incarnation ", incarnation,
                     " is stale (current ", it->second.incarnation, ")"));
  }
  return &it->second;
}

absl::StatusOr<std::pair<const JobRecord*, int32_t>> Coordinator::MemberOf(
    const std::string& worker_id, int64_t generation) {
  const Worker& worker = workers_.at(worker_id);
  const JobRecord* job =
      worker.job.empty() ? nullptr : state_.FindJob(worker.job);
  if (job == nullptr || job->finished() || job->generation != generation) {
    return absl::AbortedError(absl::StrCat("worker '", worker_id,
                                           "': generation ", generation,
                                           " is not current; rejoin"));
  }
  const int32_t hint = worker.member_index;
  if (hint >= 0 && static_cast<size_t>(hint) < job->members.size() &&
      job->members[hint].worker_id == worker_id) {
    return std::make_pair(job, job->members[hint].rank);
  }
  for (const Member& member : job->members) {
    if (member.worker_id == worker_id) {
      return std::make_pair(job, member.rank);
    }
  }
  return absl::AbortedError(absl::StrCat("worker '", worker_id,
                                         "' is not in generation ", generation,
                                         " of ", job->name));
}

absl::StatusOr<v1::RegisterResponse> Coordinator::Register(
    const v1::RegisterRequest& request) {
  if (request.worker_id().empty()) {
    return absl::InvalidArgumentError("worker_id: must be set");
  }
  if (request.incarnation() == 0) {
    return absl::InvalidArgumentError("incarnation: must be non-zero");
  }
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(request.worker_id());
  if (it != workers_.end() && it->second.incarnation != request.incarnation()) {
    // The same worker, restarted: its old process is gone.
    RemoveWorker(request.worker_id(),
                 absl::StrCat("worker ", request.worker_id(),
                              " restarted (new incarnation)"),
                 /*involuntary=*/true);
  }
  Worker& worker = workers_[request.worker_id()];
  ++worker_states_version_;
  RefreshHeartbeatTiming();
  const auto [interval, lease] = heartbeat_timing_;
  worker.incarnation = request.incarnation();
  worker.lease = lease;
  ExtendLease(worker, clock_->Now() + lease);
  worker.metrics_address = request.metrics_address();
  ++version_;
  v1::RegisterResponse response;
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(interval));
  response.set_lease_ms(absl::ToInt64Milliseconds(lease));
  return response;
}

void Coordinator::RefreshHeartbeatTiming() {
  heartbeat_timing_ = HeartbeatTiming();
}

std::pair<absl::Duration, absl::Duration> Coordinator::HeartbeatTiming() const {
  const absl::Duration base = options_.heartbeat_interval;
  if (options_.max_heartbeats_per_second <= 0) return {base, options_.lease};
  int64_t demand = 0;
  for (const auto& [name, job] : state_.jobs()) {
    if (!job.finished()) demand += std::max(job.spec.max_workers(), 0);
  }
  const int64_t pool =
      std::max({static_cast<int64_t>(workers_.size()),
                static_cast<int64_t>(options_.max_pool_workers), demand});
  const absl::Duration scaled =
      absl::Seconds(pool / options_.max_heartbeats_per_second);
  if (scaled <= base) return {base, options_.lease};
  // Whole milliseconds, as the wire carries them.
  const absl::Duration interval = absl::Ceil(scaled, absl::Milliseconds(1));
  return {interval,
          absl::Ceil(options_.lease * absl::FDivDuration(interval, base),
                     absl::Milliseconds(1))};
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(
    const v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Worker * worker,
                   AuthenticWorker(request.worker_id(), request.incarnation()));
  const int64_t version_before = version_;
  worker->lease = heartbeat_timing_.second;
  ExtendLease(*worker, clock_->Now() + worker->lease);
  const JobRecord* job =
      worker->job.empty() ? nullptr : state_.FindJob(worker->job);
  if (job != nullptr && !job->finished() && request.generation() > 0 &&
      request.generation() == job->generation) {
    if (!request.collective_error().empty()) {
      RequestNewGeneration(
          job->name,
          absl::StrCat("collective error on ", request.worker_id(), ": ",
                       request.collective_error()),
          /*involuntary=*/true);
    }
    if (request.preempting() && !worker->preempting) {
      worker->preempting = true;
      ++preempting_workers_;
      LOG(INFO) << job->name << ": " << request.worker_id()
                << " is being preempted; emergency checkpoint requested";
      ++version_;
    }
  } else if (request.preempting() && job == nullptr && !worker->preempting) {
    // A free worker leaving: nothing to save.
    worker->preempting = true;
    ++preempting_workers_;
    ++version_;
  }
  // Only a heartbeat that changed something can change what Reconcile
  // decides (an O(workers) pass); Tick covers the passing of time.
  if (version_ != version_before) Reconcile();
  v1::HeartbeatResponse response;
  response.set_heartbeat_interval_ms(
      absl::ToInt64Milliseconds(heartbeat_timing_.first));
  response.set_lease_ms(absl::ToInt64Milliseconds(worker->lease));
  job = worker->job.empty() ? nullptr : state_.FindJob(worker->job);
  response.set_committed_step(-1);
  if (job == nullptr && !worker->finished_job.empty()) {
    response.set_job(worker->finished_job);
    response.set_job_finished(true);
  } else if (job != nullptr) {
    response.set_job(job->name);
    const JobRuntime& runtime = Runtime(*job);
    // An open rendezvous means "your generation is over": announce the
    // next one so every member aborts and rejoins now.
    response.set_generation(job->generation +
                            (runtime.rendezvous_open ? 1 : 0));
    response.set_committed_step(job->committed_step);
    response.set_job_finished(job->finished());
    bool preemption_pending = false;
    if (preempting_workers_ > 0) {  // else no member can be preempting
      for (const Member& member : job->members) {
        auto w = workers_.find(member.worker_id);
        preemption_pending |= w != workers_.end() && w->second.preempting;
      }
    }
    response.set_checkpoint_requested(preemption_pending);
  }
  return response;
}

absl::StatusOr<v1::JoinGenerationResponse> Coordinator::JoinGeneration(
    const v1::JoinGenerationRequest& request, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Worker * worker,
                   AuthenticWorker(request.worker_id(), request.incarnation()));
  const JobRecord* current =
      worker->job.empty() ? nullptr : state_.FindJob(worker->job);
  const bool member_of_newer =
      current != nullptr && !current->finished() &&
      current->generation > request.after_generation() &&
      !Runtime(*current).rendezvous_open &&
      MemberOf(request.worker_id(), current->generation).ok();
  if (!member_of_newer) {
    if (current != nullptr && !current->finished() &&
        !Runtime(*current).rendezvous_open &&
        MemberOf(request.worker_id(), current->generation).ok()) {
      // A member of the current generation asking to rejoin: its
      // communicator broke without a report. The whole world re-forms.
      RequestNewGeneration(
          current->name,
          absl::StrCat("worker ", request.worker_id(), " left generation ",
                       current->generation),
          /*involuntary=*/true);
    }
    worker->joining = true;
    ++worker_states_version_;
    worker->after_generation = request.after_generation();
    ++version_;
    Reconcile();
  }
  const std::string worker_id = request.worker_id();
  const uint64_t incarnation = request.incarnation();
  const std::shared_ptr<absl::CondVar> wake = worker->membership_changed;
  // Ready when the worker is in a newer generation of its job, or is gone.
  const auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = workers_.find(worker_id);
    if (it == workers_.end() || it->second.incarnation != incarnation) {
      return true;
    }
    return !it->second.joining || shutting_down_;
  };
  while (!ready()) {
    if (clock_->WaitWithDeadline(&mu_, wake.get(), deadline)) break;
  }
  if (shutting_down_) return ShuttingDown();
  ASSIGN_OR_RETURN(worker, AuthenticWorker(worker_id, incarnation));
  if (worker->joining) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no generation formed for ", worker_id, " yet; call again"));
  }
  const JobRecord* job = state_.FindJob(worker->job);
  ASSIGN_OR_RETURN(const auto membership,
                   MemberOf(worker_id, job == nullptr ? 0 : job->generation));
  v1::JoinGenerationResponse response;
  response.set_job(job->name);
  response.set_generation(job->generation);
  response.set_world_size(static_cast<int32_t>(job->members.size()));
  response.set_rank(membership.second);
  response.mutable_bootstrap()->set_store_prefix(
      absl::StrCat(job->name, "/generation/", job->generation, "/"));
  response.set_resume_checkpoint(job->committed_path);
  response.set_resume_step(job->committed_step);
  *response.mutable_spec() = job->spec;
  response.set_dataset_fingerprint(job->dataset_fingerprint);
  response.set_total_steps(Runtime(*job).total_steps);
  response.set_report_every_steps(Runtime(*job).report_every_steps);
  response.set_assignment_lookahead_steps(
      static_cast<int32_t>(Runtime(*job).lookahead_steps));
  for (int64_t generation : job->continuable_generations) {
    if (generation < job->generation) {
      response.add_continuable_generations(generation);
    }
  }
  return response;
}

absl::StatusOr<std::vector<v1::StepAssignment>> Coordinator::NextAssignments(
    const v1::StreamAssignmentsRequest& request, int64_t max_steps,
    absl::Time deadline, bool continuation,
    std::atomic<int64_t>* wake_horizon) {
  absl::StatusOr<AssignmentPlan> plan;
  {
    absl::MutexLock lock(&mu_);
    plan = PlanAssignments(request, max_steps, deadline, continuation,
                           wake_horizon);
  }
  if (!plan.ok()) return plan.status();
  return BuildAssignments(*plan);
}

void Coordinator::NextAssignmentsBatch(std::vector<AssignmentFetch>& fetches,
                                       int64_t max_steps) {
  std::vector<absl::StatusOr<AssignmentPlan>> plans;
  plans.reserve(fetches.size());
  {
    absl::MutexLock lock(&mu_);
    for (AssignmentFetch& fetch : fetches) {
      plans.push_back(PlanAssignments(fetch.request, max_steps,
                                      absl::InfinitePast(), fetch.continuation,
                                      fetch.wake_horizon));
    }
  }
  for (size_t i = 0; i < fetches.size(); ++i) {
    fetches[i].result = plans[i].ok()
                            ? BuildAssignments(*plans[i])
                            : absl::StatusOr<std::vector<v1::StepAssignment>>(
                                  plans[i].status());
  }
}

absl::StatusOr<std::vector<v1::StepAssignment>> Coordinator::BuildAssignments(
    const AssignmentPlan& plan) {
  std::vector<v1::StepAssignment> assignments;
  int64_t ids_so_far = 0;
  for (int64_t step = plan.from; step < plan.end && ids_so_far < kMaxIdsPerCall;
       ++step) {
    v1::StepAssignment assignment;
    assignment.set_step(step);
    assignment.set_generation(plan.generation);
    if (plan.positions) {
      ASSIGN_OR_RETURN(const sampler::PositionRange range,
                       sampler::RankPositions(plan.global_batch, step,
                                              plan.world, plan.rank));
      assignment.mutable_positions()->set_begin(range.begin);
      assignment.mutable_positions()->set_end(range.end);
      ids_so_far += range.size();
    } else {
      ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                       sampler::RankExampleIds(*plan.sampler, plan.global_batch,
                                               step, plan.world, plan.rank));
      assignment.mutable_example_ids()->Add(ids.begin(), ids.end());
      ids_so_far += static_cast<int64_t>(ids.size());
    }
    assignments.push_back(std::move(assignment));
  }
  return assignments;
}

absl::StatusOr<Coordinator::AssignmentPlan> Coordinator::PlanAssignments(
    const v1::StreamAssignmentsRequest& request, int64_t max_steps,
    absl::Time deadline, bool continuation,
    std::atomic<int64_t>* wake_horizon) {
  RETURN_IF_ERROR(
      AuthenticWorker(request.worker_id(), request.incarnation()).status());
  ASSIGN_OR_RETURN(auto membership,
                   MemberOf(request.worker_id(), request.generation()));
  const std::string name = membership.first->name;
  const int64_t generation = request.generation();
  const int64_t from = request.from_step();
  if (from < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("from_step: must be >= 0, got ", from));
  }
  // A rank asking from step s has trained every step before it: count that
  // as progress, so a rank reconnecting after a coordinator restart (whose
  // reports were soft state) is not held behind its own position. Not for a
  // stream's continuation: those steps were only handed out.
  JobRuntime& runtime = Runtime(*membership.first);
  if (!continuation) NoteProgress(runtime, membership.second, from - 1);
  // The horizon: the slowest rank's next step plus the look-ahead. In a
  // world that gets m > 1 steps a message, this rank's messages end at steps
  // t with (t + rank) % m == 0 (exclusive), so each advance of the horizon
  // releases a message of m steps to 1/m of the ranks, not one step to all.
  const int32_t rank = membership.second;
  const auto stop = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t horizon = Horizon(*state_.FindJob(name), runtime);
    const int64_t m = runtime.message_every_steps;
    if (m <= 1 || horizon >= runtime.total_steps) return horizon;
    return horizon - (horizon + rank) % m;
  };
  const auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const JobRecord* job = state_.FindJob(name);
    return job->generation != generation || job->finished() ||
           runtime.rendezvous_open || from < stop() ||
           from >= runtime.total_steps || shutting_down_;
  };
  // A caller that does not wait (the stream pump) must not give up the
  // lock either: a wait with a deadline already past still releases and
  // retakes it, which behind a queue of heartbeats cost the pump ~100 us
  // per stream at 4,096 workers.
  while (!ready() && deadline > clock_->Now()) {
    if (clock_->WaitWithDeadline(&mu_, &runtime.assignments_changed,
                                 deadline)) {
      break;
    }
  }
  if (shutting_down_) return ShuttingDown();
  ASSIGN_OR_RETURN(membership, MemberOf(request.worker_id(), generation));
  const JobRecord& job = *membership.first;
  if (runtime.rendezvous_open) {
    return absl::AbortedError(
        absl::StrCat(name, ": generation ", generation, " is ending (",
                     runtime.rendezvous_reason, "); rejoin"));
  }
  const int64_t end = std::min(stop(), from + max_steps);
  if (from >= end && from < runtime.total_steps) {
    if (wake_horizon != nullptr) {
      // The first horizon at which stop() passes `from`: the next step
      // boundary t > from of this rank's messages, or the job's end.
      const int64_t m = runtime.message_every_steps;
      int64_t t = from + 1;
      if (m > 1) t += (m - (t + rank) % m) % m;
      wake_horizon->store(std::min(t, runtime.total_steps));
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "no assignment within the look-ahead for step ", from, " yet"));
  }
  return AssignmentPlan{.sampler = runtime.sampler,
                        .global_batch = job.spec.global_batch(),
                        .world = static_cast<int64_t>(job.members.size()),
                        .generation = generation,
                        .rank = rank,
                        .from = from,
                        .end = end,
                        .positions = request.positions()};
}

absl::Status Coordinator::AuditStep(const JobRecord& job,
                                    const JobRuntime& runtime, int32_t rank,
                                    int64_t step, int64_t example_count,
                                    uint64_t example_digest) {
  // The ids the rank consumed must be the ones it was assigned.
  ASSIGN_OR_RETURN(
      const std::vector<int64_t> expected,
      sampler::RankExampleIds(*runtime.sampler, job.spec.global_batch(), step,
                              static_cast<int64_t>(job.members.size()), rank));
  if (example_count != static_cast<int64_t>(expected.size()) ||
      example_digest != sampler::ExampleDigest(expected)) {
    metrics_->CountAuditMismatch();
    return absl::FailedPreconditionError(absl::StrCat(
        job.name, " step ", step, " rank ", rank,
        ": the examples consumed are not the examples assigned (count ",
        example_count, " vs ", expected.size(), ")"));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::ReportStep(const v1::ReportStepRequest& request) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Worker * worker,
                   AuthenticWorker(request.worker_id(), request.incarnation()));
  ExtendLease(*worker, clock_->Now() + worker->lease);
  ASSIGN_OR_RETURN(const auto membership,
                   MemberOf(request.worker_id(), request.generation()));
  const JobRecord& job = *membership.first;
  JobRuntime& runtime = Runtime(job);
  const int64_t earlier = request.earlier_steps_size();
  if (request.step() - earlier < 0 || request.step() >= runtime.total_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step: must be in [", earlier, ", ", runtime.total_steps, ") with ",
        earlier, " earlier steps, got ", request.step()));
  }
  int64_t examples = request.example_count();
  for (int64_t i = 0; i < earlier; ++i) {
    const v1::StepDigest& digest = request.earlier_steps(i);
    examples += digest.example_count();
    const int64_t expected_step = request.step() - earlier + i;
    if (digest.step() != expected_step) {
      return absl::InvalidArgumentError(absl::StrCat(
          "earlier_steps[", i, "].step: must be ", expected_step,
          " (consecutive, ending at step - 1), got ", digest.step()));
    }
    RETURN_IF_ERROR(AuditStep(job, runtime, membership.second, digest.step(),
                              digest.example_count(), digest.example_digest()));
  }
  RETURN_IF_ERROR(AuditStep(job, runtime, membership.second, request.step(),
                            request.example_count(), request.example_digest()));
  NoteProgress(runtime, membership.second, request.step());
  metrics_->CountJobExamples(job.name, examples);
  runtime.last_loss = request.loss();
  if (request.has_eval_accuracy()) {
    runtime.eval_accuracy = request.eval_accuracy();
    runtime.eval_step = request.step();
    LOG(INFO) << job.name << ": step " << request.step() << " eval accuracy "
              << request.eval_accuracy();
  }
  ++version_;
  if (membership.second == 0) {
    v1::JobEvent event;
    event.mutable_step_progress()->set_step(request.step());
    event.mutable_step_progress()->set_loss(request.loss());
    if (request.step_seconds() > 0) {
      event.mutable_step_progress()->set_examples_per_second(
          job.spec.global_batch() / request.step_seconds());
    }
    if (request.has_eval_accuracy()) {
      event.mutable_step_progress()->set_eval_accuracy(request.eval_accuracy());
    }
    AddEvent(job, std::move(event));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CommitCheckpointResponse> Coordinator::CommitCheckpoint(
    const v1::CommitCheckpointRequest& request) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(
      AuthenticWorker(request.worker_id(), request.incarnation()).status());
  ASSIGN_OR_RETURN(const auto membership,
                   MemberOf(request.worker_id(), request.generation()));
  const JobRecord& job = *membership.first;
  JobRuntime& runtime = Runtime(job);
  if (request.step() < 0 || request.step() >= runtime.total_steps) {
    return absl::InvalidArgumentError(absl::StrCat("step: must be in [0, ",
                                                   runtime.total_steps,
                                                   "), got ", request.step()));
  }
  if (request.path().empty()) {
    return absl::InvalidArgumentError("path: must name the checkpoint");
  }
  v1::CommitCheckpointResponse response;
  if (request.step() <= job.committed_step) {
    response.set_committed(true);  // already in the lineage
    return response;
  }
  JobRuntime::Votes& votes = runtime.commit_votes[request.step()];
  if (votes.ranks.empty()) votes.first_vote = clock_->Now();
  votes.ranks.insert(membership.second);
  const std::string name = job.name;
  MaybeFinishCheckpoint(job, request.step(), request.path());
  response.set_committed(state_.FindJob(name)->committed_step >=
                         request.step());
  return response;
}

void Coordinator::MaybeFinishCheckpoint(const JobRecord& job, int64_t step,
                                        const std::string& path) {
  JobRuntime& runtime = Runtime(job);
  const JobRuntime::Votes& votes = runtime.commit_votes[step];
  if (votes.ranks.size() < job.members.size()) return;
  const std::string name = job.name;
  const absl::Time first_vote = votes.first_vote;
  const int64_t previous = job.committed_step;
  const int64_t batch = job.spec.global_batch();
  internal::Update update;
  auto* committed = update.mutable_checkpoint_committed();
  committed->set_name(name);
  committed->set_step(step);
  committed->set_path(path);
  committed->set_generation(job.generation);
  if (runtime.eval_accuracy.has_value() && runtime.eval_step == step) {
    committed->set_eval_accuracy(*runtime.eval_accuracy);
  }
  const absl::Status status = Commit(std::move(update));
  if (!status.ok()) {
    LOG(ERROR) << name << ": cannot commit step " << step << ": " << status;
    return;
  }
  runtime.commit_votes.erase(runtime.commit_votes.begin(),
                             runtime.commit_votes.upper_bound(step));
  metrics_->checkpoint_commit().Observe(
      absl::ToDoubleSeconds(clock_->Now() - first_vote));
  metrics_->CountCommittedExamples((step - previous) * batch);
  v1::JobEvent event;
  event.mutable_checkpoint_committed()->set_step(step);
  event.mutable_checkpoint_committed()->set_path(path);
  AddEvent(*state_.FindJob(name), std::move(event));
  if (step + 1 >= runtime.total_steps) {
    const absl::Status done = SetJobState(name, v1::SUCCEEDED, "");
    if (!done.ok()) LOG(ERROR) << name << ": " << done;
    return;
  }
  // Preempted members leave once the emergency checkpoint is committed.
  std::vector<std::string> leaving;
  for (const Member& member : state_.FindJob(name)->members) {
    if (workers_.at(member.worker_id).preempting) {
      leaving.push_back(member.worker_id);
    }
  }
  for (const std::string& worker_id : leaving) {
    RemoveWorker(worker_id,
                 absl::StrCat("worker ", worker_id,
                              " left after the emergency checkpoint"),
                 /*involuntary=*/false);
  }
}

absl::Status Coordinator::ResumeFromHeldState(
    const v1::ResumeFromHeldStateRequest& request) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(
      AuthenticWorker(request.worker_id(), request.incarnation()).status());
  ASSIGN_OR_RETURN(const auto membership,
                   MemberOf(request.worker_id(), request.generation()));
  const JobRecord& job = *membership.first;
  const std::string name = job.name;
  JobRuntime& runtime = Runtime(job);
  if (membership.second != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("only rank 0 resumes a generation; ", request.worker_id(),
                     " is rank ", membership.second));
  }
  if (request.step() >= runtime.total_steps - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("step: must be before the last step ",
                     runtime.total_steps - 1, ", got ", request.step()));
  }
  for (int64_t reported : runtime.reported_step) {
    if (reported > job.committed_step) {
      return absl::FailedPreconditionError(
          absl::StrCat(name, ": generation ", request.generation(),
                       " already trained past step ", job.committed_step));
    }
  }
  internal::Update update;
  auto* resumed = update.mutable_generation_resumed();
  resumed->set_name(name);
  resumed->set_generation(request.generation());
  resumed->set_step(request.step());
  resumed->set_from_generation(request.from_generation());
  resumed->set_worker_id(request.worker_id());
  RETURN_IF_ERROR(Commit(std::move(update)));
  const JobRecord& updated = *state_.FindJob(name);
  ResetProgress(runtime, updated.members.size(), updated.resume_step);
  LOG(INFO) << name << ": generation " << request.generation()
            << " resumes after step " << request.step() << " from generation "
            << request.from_generation() << "'s state held by rank "
            << request.source_rank() << " (committed step "
            << updated.committed_step << ")";
  v1::JobEvent event;
  auto* changed = event.mutable_generation_changed();
  changed->set_generation(request.generation());
  changed->set_world_size(static_cast<int32_t>(updated.members.size()));
  changed->set_reason(absl::StrCat(
      "resumed after step ", request.step(), " from the state rank ",
      request.source_rank(), " held (generation ", request.from_generation(),
      "), not from the checkpoint of step ", updated.committed_step));
  AddEvent(updated, std::move(event));
  return absl::OkStatus();
}

absl::StatusOr<v1::RejectCheckpointResponse> Coordinator::RejectCheckpoint(
    const v1::RejectCheckpointRequest& request) {
  if (request.reason().empty()) {
    return absl::InvalidArgumentError("reason: must say what is wrong");
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(
      AuthenticWorker(request.worker_id(), request.incarnation()).status());
  ASSIGN_OR_RETURN(const auto membership,
                   MemberOf(request.worker_id(), request.generation()));
  const JobRecord& job = *membership.first;
  const std::string name = job.name;
  v1::RejectCheckpointResponse response;
  if (request.step() > job.committed_step) {
    // Another rank's rejection got here first.
    response.set_resume_step(job.committed_step);
    return response;
  }
  if (request.step() < job.committed_step) {
    return absl::InvalidArgumentError(
        absl::StrCat("step: ", request.step(), " is not the head of ", name,
                     "'s lineage (step ", job.committed_step, ")"));
  }
  const std::string what = absl::StrCat(
      "checkpoint of step ", request.step(), " (", request.path(),
      ") rejected by ", request.worker_id(), ": ", request.reason());
  LOG(ERROR) << name << ": " << what;
  internal::Update update;
  auto* rejected = update.mutable_checkpoint_rejected();
  rejected->set_name(name);
  rejected->set_step(request.step());
  rejected->set_path(request.path());
  rejected->set_worker_id(request.worker_id());
  rejected->set_reason(request.reason());
  const absl::Status status = Commit(std::move(update));
  if (absl::IsFailedPrecondition(status)) {
    // No retained commit to go back to: stop rather than retrain silently
    // from the start.
    RETURN_IF_ERROR(SetJobState(
        name, v1::FAILED,
        absl::StrCat(what, "; no earlier retained checkpoint to resume from (",
                     status.message(), ")")));
    response.set_resume_step(request.step());
    return response;
  }
  RETURN_IF_ERROR(status);
  const JobRecord& updated = *state_.FindJob(name);
  JobRuntime& runtime = Runtime(updated);
  // Evaluations reported after the new head belong to the dropped branch.
  runtime.eval_accuracy.reset();
  runtime.eval_step = -1;
  metrics_->CountRejectedCheckpoint();
  v1::JobEvent event;
  auto* rejected_event = event.mutable_checkpoint_rejected();
  rejected_event->set_step(request.step());
  rejected_event->set_path(request.path());
  rejected_event->set_reason(request.reason());
  rejected_event->set_resume_step(updated.committed_step);
  AddEvent(updated, std::move(event));
  RequestNewGeneration(
      name,
      absl::StrCat(what, "; resuming after step ", updated.committed_step),
      /*involuntary=*/true);
  response.set_resume_step(updated.committed_step);
  return response;
}

absl::StatusOr<const JobRecord*> Coordinator::JobOfStoreKey(
    const std::string& key) const {
  // Keys are "<job>/generation/<g>/<gloo key>" (the bootstrap prefix).
  const size_t slash = key.find("/generation/");
  const JobRecord* job = slash == std::string::npos
                             ? nullptr
                             : state_.FindJob(key.substr(0, slash));
  if (job == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("key: '", key, "' is not under a job's store prefix"));
  }
  return job;
}

absl::Status Coordinator::StoreSet(const v1::StoreSetRequest& request) {
  absl::MutexLock lock(&mu_);
  const std::string& key = request.key();
  ASSIGN_OR_RETURN(const JobRecord* job, JobOfStoreKey(key));
  Runtime(*job).store[key] = request.value();
  ++version_;
  return absl::OkStatus();
}

absl::StatusOr<v1::StoreGetResponse> Coordinator::StoreGet(
    const v1::StoreGetRequest& request, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  const std::string& key = request.key();
  ASSIGN_OR_RETURN(const JobRecord* job, JobOfStoreKey(key));
  const std::string name = job->name;
  // A rank waiting for a peer's key of a generation that has ended (the
  // peer died or rejected its checkpoint) would wait out its whole
  // collective timeout: tell it now instead.
  int64_t generation = 0;
  const size_t number = key.find("/generation/") + strlen("/generation/");
  const bool numbered = absl::SimpleAtoi(
      key.substr(number, key.find('/', number) - number), &generation);
  const auto over = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const JobRecord* current = state_.FindJob(name);
    return numbered &&
           (current->finished() || generation < current->generation ||
            (generation == current->generation &&
             runtime_[name].rendezvous_open));
  };
  const auto present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return runtime_[name].store.count(key) > 0 || shutting_down_ || over();
  };
  clock_->AwaitWithDeadline(&mu_, absl::Condition(&present), deadline);
  if (shutting_down_) return ShuttingDown();
  if (over()) {
    return absl::AbortedError(absl::StrCat("key '", key, "': generation ",
                                           generation, " of ", name,
                                           " is over; rejoin"));
  }
  auto& store = runtime_[name].store;
  auto it = store.find(key);
  if (it == store.end()) {
    return absl::NotFoundError(absl::StrCat("key '", key, "' not set"));
  }
  v1::StoreGetResponse response;
  response.set_value(it->second);
  return response;
}

// ---------------------------------------------------------------------------
// Membership: leases, rendezvous, generations
// ---------------------------------------------------------------------------

void Coordinator::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  ++version_;
  WakeWaiters();
}

void Coordinator::ExtendLease(Worker& worker, absl::Time deadline) {
  worker.lease_deadline = deadline;
  earliest_lease_deadline_ = std::min(earliest_lease_deadline_, deadline);
}

void Coordinator::Tick() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<std::string> expired;
  if (earliest_lease_deadline_ < now) {
    earliest_lease_deadline_ = absl::InfiniteFuture();
    for (const auto& [id, worker] : workers_) {
      if (worker.lease_deadline < now) {
        expired.push_back(id);
      } else {
        earliest_lease_deadline_ =
            std::min(earliest_lease_deadline_, worker.lease_deadline);
      }
    }
  }
  for (const std::string& id : expired) {
    RemoveWorker(id, absl::StrCat("lease of worker ", id, " expired"),
                 /*involuntary=*/true);
  }
  RefreshHeartbeatTiming();
  Reconcile();
  UpdateGauges();
}

void Coordinator::UpdateGauges() {
  std::map<v1::JobState, int64_t> by_state;
  for (const auto& [name, job] : state_.jobs()) {
    by_state[job.state]++;
    if (job.finished()) {
      if (jobs_with_series_.erase(name) > 0) metrics_->RemoveJob(name);
      lineage_time_.erase(name);
      continue;
    }
    const JobRuntime& runtime = Runtime(job);
    JobProgress progress;
    progress.committed_step = job.committed_step;
    progress.step = job.committed_step;
    progress.restarts = job.restarts;
    progress.restarts_remaining =
        std::max<int64_t>(0, job.spec.restart_budget() - job.restarts);
    progress.checkpoint_interval_steps = job.spec.checkpoint().interval_steps();
    if (auto it = lineage_time_.find(name); it != lineage_time_.end()) {
      progress.lineage_time = it->second;
    }
    progress.epoch = static_cast<double>(job.committed_step + 1) *
                     job.spec.global_batch() / job.examples_per_epoch();
    progress.world_size = job.members.size();
    progress.generation = job.generation;
    if (!runtime.reported_step.empty()) {
      const int64_t slowest = *std::min_element(runtime.reported_step.begin(),
                                                runtime.reported_step.end());
      progress.lookahead_steps =
          std::min(runtime.lookahead_steps,
                   std::max<int64_t>(0, runtime.total_steps - slowest - 1));
      progress.step = std::max(slowest, job.committed_step);
    }
    metrics_->SetJobProgress(name, progress);
    jobs_with_series_.insert(name);
  }
  for (int state = v1::QUEUED; state <= v1::CANCELLED; ++state) {
    metrics_->SetJobsInState(static_cast<v1::JobState>(state),
                             by_state[static_cast<v1::JobState>(state)]);
  }
  if (worker_gauges_version_ == worker_states_version_) return;
  worker_gauges_version_ = worker_states_version_;
  int64_t free = 0, joining = 0, member = 0;
  for (const auto& [id, worker] : workers_) {
    if (worker.joining) {
      ++joining;
    } else if (!worker.job.empty()) {
      ++member;
    } else {
      ++free;
    }
  }
  metrics_->SetWorkers(free, joining, member);
}

void Coordinator::RemoveWorker(const std::string& worker_id,
                               const std::string& reason, bool involuntary) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  const std::string job_name = it->second.job;
  if (it->second.preempting) --preempting_workers_;
  it->second.membership_changed->SignalAll();  // its JoinGeneration, if any
  workers_.erase(it);
  ++worker_states_version_;
  ++version_;
  LOG(INFO) << reason;
  const JobRecord* job = job_name.empty() ? nullptr : state_.FindJob(job_name);
  if (job == nullptr || job->finished()) return;
  for (const Member& member : job->members) {
    if (member.worker_id == worker_id) {
      RequestNewGeneration(job_name, reason, involuntary);
      return;
    }
  }
}

void Coordinator::RequestNewGeneration(const std::string& name,
                                       const std::string& reason,
                                       bool involuntary) {
  const JobRecord* job = state_.FindJob(name);
  JobRuntime& runtime = Runtime(*job);
  if (runtime.rendezvous_open) {
    runtime.rendezvous_involuntary |= involuntary;
    return;
  }
  runtime.rendezvous_open = true;
  AssignmentsChanged(runtime);  // its streams end now
  runtime.rendezvous_reason = reason;
  runtime.rendezvous_involuntary = involuntary;
  runtime.last_call_deadline = absl::InfiniteFuture();
  if (involuntary) {
    if (job->restarts + 1 > job->spec.restart_budget()) {
      const absl::Status failed = SetJobState(
          name, v1::FAILED,
          absl::StrCat("restart budget of ", job->spec.restart_budget(),
                       " exhausted; last failure: ", reason));
      if (!failed.ok()) LOG(ERROR) << name << ": " << failed;
      runtime.rendezvous_open = false;
      return;
    }
    const absl::Duration backoff =
        std::min(options_.restart_backoff_base * std::pow(2.0, job->restarts),
                 options_.restart_backoff_max);
    runtime.not_before = clock_->Now() + backoff;
  }
  if (job->state == v1::RUNNING) {
    const absl::Status restarting = SetJobState(name, v1::RESTARTING, reason);
    if (!restarting.ok()) LOG(ERROR) << name << ": " << restarting;
  }
  ++version_;
}

void Coordinator::Reconcile() {
  std::vector<std::string> names;
  // A job whose world is formed, full and not re-forming takes no free
  // worker (ReconcileJob returns at once): when every job is such, the scan
  // of every worker for free ones is skipped.
  bool may_take_workers = false;
  for (const auto& [name, job] : state_.jobs()) {
    if (job.finished()) continue;
    names.push_back(name);
    const bool full_world =
        job.generation > 0 && !job.members.empty() &&
        !Runtime(job).rendezvous_open &&
        static_cast<int32_t>(job.members.size()) >= job.spec.max_workers();
    if (!full_world) may_take_workers = true;
  }
  // Free workers waiting for a job, handed to jobs in creation order (a job
  // that cannot start leaves them to later jobs: backfill).
  std::deque<std::string> free;
  if (may_take_workers) {
    for (const auto& [id, worker] : workers_) {
      if (worker.joining && worker.job.empty() && !worker.preempting) {
        free.push_back(id);
      }
    }
  }
  for (const std::string& name : names) {
    const JobRecord* job = state_.FindJob(name);
    if (job != nullptr && !job->finished()) ReconcileJob(*job, &free);
  }
}

void Coordinator::ReconcileJob(const JobRecord& job,
                               std::deque<std::string>* free) {
  JobRuntime& runtime = Runtime(job);
  const std::string name = job.name;
  const int32_t min_workers = job.spec.min_workers();
  const int32_t max_workers = job.spec.max_workers();
  const bool has_world = job.generation > 0 && !job.members.empty();
  if (has_world && !runtime.rendezvous_open) {
    if (static_cast<int32_t>(job.members.size()) < max_workers &&
        !free->empty()) {
      RequestNewGeneration(name, "a worker joined while below max_workers",
                           /*involuntary=*/false);
    } else {
      return;
    }
  }
  // Participants: this job's workers (survivors of the last generation)
  // that have joined, then free workers up to max.
  std::vector<std::string> joined;
  int32_t survivors = 0;
  for (const auto& [id, worker] : workers_) {
    if (worker.job != name || worker.preempting) continue;
    ++survivors;
    if (worker.joining) joined.push_back(id);
  }
  // Free workers this job would take; they stay reserved for it while its
  // rendezvous waits (later jobs must not form worlds with them).
  // Survivors keep their seats whether or not they have joined yet.
  std::vector<std::string> claimed;
  while (!free->empty() &&
         static_cast<int32_t>(claimed.size()) < max_workers - survivors) {
    claimed.push_back(free->front());
    free->pop_front();
  }
  joined.insert(joined.end(), claimed.begin(), claimed.end());
  if (static_cast<int32_t>(joined.size()) < min_workers) {
    // Cannot start: give the claimed workers back for later jobs.
    free->insert(free->begin(), claimed.begin(), claimed.end());
    return;
  }
  const absl::Time now = clock_->Now();
  if (now < runtime.not_before) return;
  // Whom to wait for: every survivor, and for a first world, max_workers.
  const int32_t expected =
      job.generation == 0
          ? max_workers
          : std::min(max_workers,
                     survivors + static_cast<int32_t>(claimed.size()));
  const bool everyone = static_cast<int32_t>(joined.size()) >= expected;
  if (!everyone) {
    if (runtime.last_call_deadline == absl::InfiniteFuture()) {
      // Survivors learn of the rendezvous on their next heartbeat: wait at
      // least one interval of the pool's.
      runtime.last_call_deadline =
          now + std::max(options_.last_call, HeartbeatTiming().first);
    }
    if (now < runtime.last_call_deadline) return;
  }
  if (static_cast<int32_t>(joined.size()) > max_workers) {
    joined.resize(max_workers);
  }
  const absl::Status formed = FormGeneration(job, joined);
  if (!formed.ok()) LOG(ERROR) << name << ": " << formed;
}

absl::Status Coordinator::FormGeneration(
    const JobRecord& job, const std::vector<std::string>& workers) {
  const std::string name = job.name;
  JobRuntime& runtime = Runtime(job);
  // Survivors keep their relative order (ranks), newcomers follow by id.
  std::vector<std::string> ordered;
  for (const Member& member : job.members) {
    if (std::find(workers.begin(), workers.end(), member.worker_id) !=
        workers.end()) {
      ordered.push_back(member.worker_id);
    }
  }
  for (const std::string& id : workers) {
    if (std::find(ordered.begin(), ordered.end(), id) == ordered.end()) {
      ordered.push_back(id);
    }
  }
  internal::Update update;
  auto* started = update.mutable_generation_started();
  started->set_name(name);
  started->set_generation(job.generation + 1);
  started->set_reason(runtime.rendezvous_reason);
  started->set_counts_as_restart(job.generation > 0 &&
                                 runtime.rendezvous_involuntary);
  for (size_t rank = 0; rank < ordered.size(); ++rank) {
    auto* member = started->add_members();
    member->set_worker_id(ordered[rank]);
    member->set_incarnation(workers_.at(ordered[rank]).incarnation);
    member->set_rank(static_cast<int32_t>(rank));
  }
  const std::string reason = runtime.rendezvous_reason.empty()
                                 ? "first generation"
                                 : runtime.rendezvous_reason;
  RETURN_IF_ERROR(Commit(std::move(update)));
  metrics_->CountGenerationChange(job.generation == 0 ? "first"
                                  : runtime.rendezvous_involuntary
                                      ? "involuntary"
                                      : "voluntary");
  const JobRecord& updated = *state_.FindJob(name);
  for (auto& [id, worker] : workers_) {
    if (worker.job == name) worker.job.clear();
  }
  for (size_t i = 0; i < ordered.size(); ++i) {
    Worker& worker = workers_.at(ordered[i]);
    worker.member_index = static_cast<int32_t>(i);
    worker.job = name;
    worker.joining = false;
    worker.finished_job.clear();
  }
  ++worker_states_version_;
  runtime.rendezvous_open = false;
  runtime.rendezvous_reason.clear();
  runtime.rendezvous_involuntary = false;
  runtime.last_call_deadline = absl::InfiniteFuture();
  ResetProgress(runtime, ordered.size(), updated.committed_step);
  runtime.commit_votes.clear();
  runtime.store.clear();
  LOG(INFO) << name << ": generation " << updated.generation << " with "
            << ordered.size() << " workers (" << reason
            << "), resuming after step " << updated.committed_step;
  v1::JobEvent event;
  event.mutable_generation_changed()->set_generation(updated.generation);
  event.mutable_generation_changed()->set_world_size(
      static_cast<int32_t>(ordered.size()));
  event.mutable_generation_changed()->set_reason(reason);
  AddEvent(updated, std::move(event));
  return SetJobState(name, v1::RUNNING, "");
}

}  // namespace podtrain::coordinator
