// The coordinator: admits jobs, forms and re-forms each job's world
// (generations), tells every rank what it trains on, and commits checkpoints.
// services/ exposes it over gRPC; this class holds the logic and the lock.
//
// How a job runs (see proto/worker.proto for the worker's side):
//   1. CreateJob validates the spec against its dataset and journals
//      JobCreated; the job is QUEUED.
//   2. Workers Register, Heartbeat, and call JoinGeneration. A rendezvous for
//      the job's next generation gathers them: it closes when every expected
//      worker has joined, or when min_workers have and the last-call window
//      has passed, and never before the restart backoff ends. Closing
//      journals GenerationStarted (members, ranks) and the job is RUNNING.
//   3. Each rank streams its assignments (sampler/: the examples of its slice
//      of every step, a bounded look-ahead ahead of the slowest rank),
//      reports steps, and commits checkpoints; a checkpoint counts once
//      every rank of the generation has committed it (journaled).
//   4. Any membership change opens a new rendezvous: a lease expires, a rank
//      reports a collective error, a worker restarts (new incarnation), a
//      preempted worker leaves after the emergency checkpoint, a free worker
//      arrives while the world is below max. Every member hears of it on its
//      next heartbeat (HeartbeatResponse.generation moves ahead), aborts its
//      communicator and rejoins; training resumes after the committed step.
//      Involuntary changes count against the job's restart budget and wait
//      out an exponential backoff.
//   5. The commit of the last step ends the job SUCCEEDED.
//
// Durable state (jobs, generations, commits) changes only through Apply()
// of an Update written to the journal first; a coordinator restarted on the
// same journal recovers it, and the members of each running generation keep
// training when they re-register with their incarnation. Leases, step
// reports and event logs are soft state.
//
// Time comes from the injected Clock; Tick() does the periodic work (lease
// expiry, last-call windows), so tests drive it with a FakeClock.
//
// Thread-safety: thread-safe; one mutex guards everything. Blocking calls
// (JoinGeneration, NextAssignments, StoreGet, WaitForEvents) wait on it
// through the clock and give it up while waiting.

#ifndef PODTRAIN_COORDINATOR_COORDINATOR_H_
#define PODTRAIN_COORDINATOR_COORDINATOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/coordinator_state.h"
#include "coordinator/journal.h"
#include "proto/job.pb.h"
#include "proto/worker.pb.h"
#include "sampler/stream_sampler.h"

namespace podtrain::coordinator {

struct CoordinatorOptions {
  // SQLite journal of durable state; created if missing, recovered if not.
  std::string journal_path;
  // Workers heartbeat this often; a worker silent for `lease` is gone.
  absl::Duration heartbeat_interval = absl::Milliseconds(300);
  absl::Duration lease = absl::Seconds(3);
  // Bound on the pool's aggregate heartbeat rate (0: none). A worker that
  // registers while the pool (the registered workers, --max_pool_workers,
  // or the max_workers of every unfinished job, whichever is largest) holds
  // P workers is handed the interval max(heartbeat_interval,
  // P / max_heartbeats_per_second) and a lease stretched by the same factor,
  // so 4,096 workers at the default 2,000/s heartbeat every 2.05 s with a
  // 20.5 s lease. Heartbeat responses carry the pool's current timing, so
  // workers that registered into a smaller pool follow it (within a Tick).
  // Pools of up to 600 workers keep the defaults above.
  double max_heartbeats_per_second = 2000;
  // The first lease a running generation's members get when the
  // coordinator recovers from its journal: at least this, so that a
  // coordinator restart is not taken for the loss of every worker while they
  // reconnect (gRPC's reconnect backoff, thousands of workers re-registering
  // at once, a loaded machine). A member that really died during the outage
  // is found sooner anyway: its peers' collectives fail and they say so.
  absl::Duration recovery_lease = absl::Seconds(10);
  // After min_workers have joined a rendezvous, how long to wait for the
  // rest of the expected workers.
  absl::Duration last_call = absl::Seconds(1);
  // Restart backoff: base * 2^(restarts-1), at most max.
  absl::Duration restart_backoff_base = absl::Milliseconds(500);
  absl::Duration restart_backoff_max = absl::Seconds(30);
  // Assignments run at most this many steps ahead of the slowest rank
  // (more in worlds that report every k > 1 steps or get m > 1 steps a
  // message: at least m + k + 4).
  int64_t assignment_lookahead_steps = 16;
  // A world of W ranks reports every ceil(W / max_reports_per_step) steps
  // (JoinGenerationResponse.report_every_steps), its ranks staggered, and
  // gets its assignments that many steps a message: every rank of a
  // synchronous world finishes a step at the same moment, and 4,096 reports
  // and 4,096 stream writes at once queue for hundreds of milliseconds on a
  // small coordinator, delaying heartbeats behind them (bench/coordinator:
  // at 4,096 ranks, 256 a step left the assignment p99 at 20 ms, 128 halves
  // the burst). 0: every step, whatever the world's size.
  int32_t max_reports_per_step = 128;
  // A world of W ranks gets its assignments m = max(k, ceil(W / this))
  // steps a message, k its report interval, each rank's messages ending at
  // its own offset: a step then brings about W / m stream writes, each a
  // syscall and a wake-up on both sides (at 4,096 ranks, the 128 writes a
  // step of m = k = 32 took the coordinator 4-24 ms, bench/RESULTS.md,
  // coordinator). Stream positions make the longer look-ahead this needs
  // cheap: 16 bytes a step. 0: m = k.
  int32_t max_assignment_messages_per_step = 64;
  // Workers the pool can ever have (0: unknown). A job whose min_workers
  // exceeds it is refused with RESOURCE_EXHAUSTED instead of queueing
  // forever.
  int32_t max_pool_workers = 0;
  // Where the coordinator's metrics go (a new registry if null).
  std::shared_ptr<prometheus::Registry> metrics_registry;
};

class Coordinator {
 public:
  // Opens (or creates) the journal and recovers the state it holds.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(
      const CoordinatorOptions& options, Clock* clock);

  // --- Public job API (proto/job.proto documents codes and semantics) ---
  absl::StatusOr<v1::Job> CreateJob(const v1::CreateJobRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& name);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> CancelJob(const std::string& name);
  // Events of job `name` with sequence number > after; waits until there is
  // one, the job has ended (returns what is left, possibly nothing), or
  // `deadline`. `*next` is the cursor for the next call.
  absl::StatusOr<std::vector<v1::JobEvent>> WaitForEvents(
      const std::string& name, int64_t after, absl::Time deadline,
      int64_t* next);

  // --- Worker API (proto/worker.proto) ---
  absl::StatusOr<v1::RegisterResponse> Register(
      const v1::RegisterRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(
      const v1::HeartbeatRequest& request);
  // Blocks until the worker is a member of a generation newer than
  // request.after_generation (DEADLINE_EXCEEDED at `deadline`: call again).
  absl::StatusOr<v1::JoinGenerationResponse> JoinGeneration(
      const v1::JoinGenerationRequest& request, absl::Time deadline);
  // Up to `max_steps` assignments from request.from_step on, waiting until
  // at least one is within the look-ahead. An empty result with OK means the
  // job's last step has been handed out; ABORTED means the generation ended.
  // A worker asking from step s (a new stream) has trained every step before
  // s, which counts as its progress; a `continuation` of a stream this
  // coordinator is already serving (its steps before s were only handed
  // out, not trained) does not, or the look-ahead would bound nothing.
  // When nothing is within the look-ahead yet, `*wake_horizon` (if given) is
  // set, under the coordinator's lock, to the horizon that will release
  // something for this rank (see SetAssignmentListener).
  absl::StatusOr<std::vector<v1::StepAssignment>> NextAssignments(
      const v1::StreamAssignmentsRequest& request, int64_t max_steps,
      absl::Time deadline, bool continuation = false,
      std::atomic<int64_t>* wake_horizon = nullptr);
  // NextAssignments without waiting for many streams at once, under one
  // hold of the lock: a step of a world reporting every k steps releases
  // W / k messages together, and one lock acquisition each (contended by
  // the heartbeats) cost ~100 us apiece on 2 shared cores (issue 8).
  struct AssignmentFetch {
    v1::StreamAssignmentsRequest request;
    bool continuation = false;
    std::atomic<int64_t>* wake_horizon = nullptr;
    // Set by NextAssignmentsBatch: as NextAssignments would return.
    absl::StatusOr<std::vector<v1::StepAssignment>> result;
  };
  void NextAssignmentsBatch(std::vector<AssignmentFetch>& fetches,
                            int64_t max_steps);
  absl::Status ReportStep(const v1::ReportStepRequest& request);
  absl::StatusOr<v1::CommitCheckpointResponse> CommitCheckpoint(
      const v1::CommitCheckpointRequest& request);
  // A member could not load the lineage's head: it leaves the lineage (or,
  // when no earlier retained commit can replace it, the job fails) and the
  // world re-forms to resume from the new head.
  absl::StatusOr<v1::RejectCheckpointResponse> RejectCheckpoint(
      const v1::RejectCheckpointRequest& request);
  // Rank 0 of a new generation: its ranks continue from a held state instead
  // of the head (journaled before any of them trains a step).
  absl::Status ResumeFromHeldState(
      const v1::ResumeFromHeldStateRequest& request);
  absl::Status StoreSet(const v1::StoreSetRequest& request);
  absl::StatusOr<v1::StoreGetResponse> StoreGet(
      const v1::StoreGetRequest& request, absl::Time deadline);

  // For serving assignment streams without a thread each: `listener` is
  // called with a job's name whenever NextAssignments may return something
  // new for that job, or end its streams (the look-ahead moved, the
  // generation changed or is ending, the job ended), and with "" when that
  // may hold for every job (any durable change, shutdown). `horizon` is the
  // job's new look-ahead horizon when only that moved (a stream whose
  // `wake_horizon` is above it has nothing new), else kAnyChange. It runs
  // under the coordinator's lock: it must be quick and must not call the
  // coordinator. Null removes it.
  static constexpr int64_t kAnyChange = std::numeric_limits<int64_t>::max();
  void SetAssignmentListener(
      std::function<void(const std::string& job, int64_t horizon)> listener);
  // The job `worker_id` belongs to (a member or a rendezvous participant);
  // "" if none or unknown.
  std::string WorkerJob(const std::string& worker_id);

  // Wakes every blocked call, which returns UNAVAILABLE ("shutting down"),
  // and refuses new blocking calls the same way. For a prompt server exit.
  void Shutdown();

  // Periodic work: expires leases, closes rendezvous whose last call has
  // passed. The server calls it every heartbeat interval / 4.
  void Tick();

  const CoordinatorOptions& options() const { return options_; }
  CoordinatorMetrics& metrics() { return *metrics_; }

 private:
  struct Worker;
  // Sets `worker`'s lease deadline, keeping earliest_lease_deadline_ a
  // lower bound.
  void ExtendLease(Worker& worker, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // A worker process the coordinator has heard from (soft state).
  struct Worker {
    uint64_t incarnation = 0;
    absl::Time lease_deadline;
    // Its lease, as handed out when it registered (see
    // CoordinatorOptions::max_heartbeats_per_second).
    absl::Duration lease;
    std::string metrics_address;
    // The job it belongs to (a member or a rendezvous participant); empty
    // while free.
    std::string job;
    // Waiting in JoinGeneration for a generation newer than this.
    bool joining = false;
    int64_t after_generation = 0;
    bool preempting = false;
    // The job this worker trained in until it ended, so its heartbeats can
    // say "your job is over" (cleared when it joins a new world).
    std::string finished_job;
    // Where it sits in its job's members (set when a generation forms): a
    // hint that spares MemberOf a scan of the members; checked before use.
    int32_t member_index = -1;
    // Signalled when its membership may have changed (a generation formed,
    // it was removed) and on shutdown: its JoinGeneration waits on it, so a
    // change wakes only the joiners it concerns, not thousands of them
    // (see JobRuntime::assignments_changed for why not a Condition).
    // Shared: a waiter keeps it alive when the worker is removed.
    std::shared_ptr<absl::CondVar> membership_changed =
        std::make_shared<absl::CondVar>();
  };

  // A job's soft state: what is not journaled.
  struct JobRuntime {
    std::string name;  // the job's
    std::shared_ptr<const sampler::StreamSampler> sampler;
    int64_t total_steps = 0;
    // Rendezvous for the next generation, if open.
    bool rendezvous_open = false;
    std::string rendezvous_reason;
    bool rendezvous_involuntary = false;
    absl::Time last_call_deadline = absl::InfiniteFuture();
    absl::Time not_before = absl::InfinitePast();
    // Per rank of the current generation: the last step it reported.
    // Changed only through NoteProgress and ResetProgress, which keep
    // `slowest` = min(reported_step) and the number of ranks at it.
    std::vector<int64_t> reported_step;
    int64_t slowest = -1;
    size_t at_slowest = 0;
    // The current generation's report interval and look-ahead (set with
    // the progress, by ResetProgress; see JoinGenerationResponse).
    int32_t report_every_steps = 1;
    int32_t message_every_steps = 1;  // m, see max_assignment_messages_...
    int64_t lookahead_steps = 0;
    // Signalled when what NextAssignments waits for may have changed (the
    // look-ahead horizon moved, the generation changed or is ending, the job
    // ended, shutdown). Streams wait on it rather than on a Condition of
    // mu_: absl evaluates every Condition waiter at every unlock of mu_,
    // which with thousands of streams is most of the coordinator's CPU.
    absl::CondVar assignments_changed;
    // Checkpoint votes of the current generation, by step.
    struct Votes {
      absl::Time first_vote;
      std::set<int32_t> ranks;
    };
    std::map<int64_t, Votes> commit_votes;
    // The collective bootstrap store of the current generation.
    std::map<std::string, std::string> store;
    // Event log for WatchJob.
    std::deque<std::pair<int64_t, v1::JobEvent>> events;
    int64_t next_event = 1;
    double last_loss = 0;
    // The latest evaluation reported (soft state).
    std::optional<double> eval_accuracy;
    int64_t eval_step = -1;
  };

  Coordinator(const CoordinatorOptions& options, Clock* clock,
              std::unique_ptr<Journal> journal);

  // What one NextAssignments call hands out, decided under the lock; the
  // ids themselves are drawn after it is released (the sampler is
  // immutable), so fan-outs hold up heartbeats and reports by less.
  struct AssignmentPlan {
    std::shared_ptr<const sampler::StreamSampler> sampler;
    int64_t global_batch = 0, world = 0, generation = 0;
    int32_t rank = 0;
    int64_t from = 0, end = 0;  // steps [from, end)
    bool positions = false;     // StreamAssignmentsRequest.positions
  };
  absl::StatusOr<AssignmentPlan> PlanAssignments(
      const v1::StreamAssignmentsRequest& request, int64_t max_steps,
      absl::Time deadline, bool continuation,
      std::atomic<int64_t>* wake_horizon) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static absl::StatusOr<std::vector<v1::StepAssignment>> BuildAssignments(
      const AssignmentPlan& plan);
  absl::Status Recover() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Journals `update` (durably) and applies it.
  absl::Status Commit(internal::Update update)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SetJobState(const std::string& name, v1::JobState state,
                           const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  JobRuntime& Runtime(const JobRecord& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Raises `rank`'s reported progress to `step` (never lowers it); wakes the
  // job's streams when the slowest rank moves on. Amortized O(1) per report.
  void NoteProgress(JobRuntime& runtime, int32_t rank, int64_t step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every one of `ranks` ranks at `step` (a new world, or recovery).
  // FAILED_PRECONDITION (and the audit-mismatch metric) unless `rank`'s
  // examples at `step` are the ones the sampler assigns it.
  absl::Status AuditStep(const JobRecord& job, const JobRuntime& runtime,
                         int32_t rank, int64_t step, int64_t example_count,
                         uint64_t example_digest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ResetProgress(JobRuntime& runtime, size_t ranks, int64_t step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes every caller blocked in JoinGeneration and NextAssignments to
  // re-check what it waits for.
  void WakeWaiters() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes the job's blocked NextAssignments calls and tells the listener.
  // The look-ahead horizon: assignments of steps below it may go out.
  int64_t Horizon(const JobRecord& job, const JobRuntime& runtime) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `progress_only`: only the slowest rank moved (the listener is told the
  // new horizon, so streams still below theirs are not fetched for).
  void AssignmentsChanged(JobRuntime& runtime, bool progress_only = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The heartbeat interval and lease to hand a worker registering now, for
  // the pool's current size. O(jobs).
  std::pair<absl::Duration, absl::Duration> HeartbeatTiming() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // heartbeat_timing_ = HeartbeatTiming() (on Register and every Tick).
  void RefreshHeartbeatTiming() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Checks worker_id/incarnation; NOT_FOUND / ABORTED otherwise.
  absl::StatusOr<Worker*> AuthenticWorker(const std::string& worker_id,
                                          uint64_t incarnation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job and rank of a worker in the generation it names; ABORTED if the
  // generation is not the job's current one or the worker is not in it.
  absl::StatusOr<std::pair<const JobRecord*, int32_t>> MemberOf(
      const std::string& worker_id, int64_t generation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The job whose store a collective-bootstrap key belongs to.
  absl::StatusOr<const JobRecord*> JobOfStoreKey(const std::string& key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Opens the rendezvous of job `name`'s next generation.
  void RequestNewGeneration(const std::string& name, const std::string& reason,
                            bool involuntary)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveWorker(const std::string& worker_id, const std::string& reason,
                    bool involuntary) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Admission and rendezvous progress for every job.
  void Reconcile() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReconcileJob(const JobRecord& job, std::deque<std::string>* free)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FormGeneration(const JobRecord& job,
                              const std::vector<std::string>& workers)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeFinishCheckpoint(const JobRecord& job, int64_t step,
                             const std::string& path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  v1::Job ToProto(const JobRecord& job) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Refreshes the gauges (jobs by state, workers, per-job progress).
  void UpdateGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddEvent(const JobRecord& job, v1::JobEvent event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps lineage_time_ up to date with a journaled update (live or
  // replayed).
  void NoteLineageTime(const internal::Update& update)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  Clock* const clock_;
  const std::unique_ptr<CoordinatorMetrics> metrics_;

  mutable absl::Mutex mu_;
  std::unique_ptr<Journal> journal_ ABSL_GUARDED_BY(mu_);
  CoordinatorState state_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  // Bumped whenever a worker comes, goes, or changes between free, joining
  // and member; UpdateGauges recounts the workers only then (a walk of
  // 4,096 of them held the lock ~1 ms on every tick).
  int64_t worker_states_version_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t worker_gauges_version_ ABSL_GUARDED_BY(mu_) = -1;
  // HeartbeatTiming() as of the last Register or Tick: what heartbeats hand
  // out, so the heartbeat path stays O(1).
  std::pair<absl::Duration, absl::Duration> heartbeat_timing_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, JobRuntime> runtime_ ABSL_GUARDED_BY(mu_);
  // Jobs whose per-job series exist (removed when they end).
  std::set<std::string> jobs_with_series_ ABSL_GUARDED_BY(mu_);
  // Per job, since when its committed lineage has not advanced: the time of
  // its last commit, or of its first generation before any (the journal's
  // update times, so a restarted coordinator recovers them).
  std::map<std::string, absl::Time> lineage_time_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped on every change that a blocked caller might wait for.
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  // Workers with `preempting` set; while there are none, a heartbeat need
  // not look at its world's members.
  int64_t preempting_workers_ ABSL_GUARDED_BY(mu_) = 0;
  // No worker's lease ends before this (a lower bound: every new deadline
  // lowers it, Tick's scan resets it to the true minimum), so Tick scans
  // the workers for expired leases only when one may have run out, not
  // every tick: at 4,096 workers the scan took most of a tick's time with
  // the lock held.
  absl::Time earliest_lease_deadline_ ABSL_GUARDED_BY(mu_) =
      absl::InfinitePast();
  std::function<void(const std::string& job, int64_t horizon)>
      assignment_listener_ ABSL_GUARDED_BY(mu_);
};

}  // namespace podtrain::coordinator

#endif  // PODTRAIN_COORDINATOR_COORDINATOR_H_
