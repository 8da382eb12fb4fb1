#include "services/coordinator_services.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "services/grpc_status.h"

namespace podtrain::services {
namespace {

// How long a stream or a blocking call waits in one go before it checks
// whether its client is still there.
constexpr absl::Duration kStreamSlice = absl::Milliseconds(500);
// Steps one stream message carries at most (a world's first message holds
// the whole look-ahead; later ones report_every_steps each).
constexpr int64_t kMaxStepsPerMessage = 64;
// Streams one hold of the coordinator's lock fetches for at most, so that a
// world forming (every stream at once) does not hold it for long.
constexpr size_t kMaxFetchesPerLock = 256;
// The earlier of the client's deadline and now + `most`. Blocking calls
// return DEADLINE_EXCEEDED at this point and the client calls again.
absl::Time CallDeadline(const grpc::ServerContext* context,
                        absl::Duration most) {
  const absl::Time client = absl::FromChrono(context->deadline());
  return std::min(client, absl::Now() + most);
}

}  // namespace

grpc::Status Authenticator::Check(
    const grpc::ServerContextBase& context) const {
  if (bearer_token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing 'authorization: Bearer <token>' metadata");
  }
  const std::string presented(it->second.data(), it->second.size());
  // Constant-time comparison: the token is a secret.
  const std::string expected = "Bearer " + bearer_token_;
  unsigned char difference = presented.size() != expected.size();
  for (size_t i = 0; i < std::min(presented.size(), expected.size()); ++i) {
    difference |= presented[i] ^ expected[i];
  }
  if (difference != 0) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "invalid bearer token");
  }
  return grpc::Status::OK;
}

// Every RPC starts with this: time the call (the timer lives until the
// handler returns) and refuse unauthenticated callers.
#define PODTRAIN_RPC(context, method)                             \
  ScopedTimer rpc_timer(&coordinator_->metrics().Rpc(method));    \
  do {                                                            \
    grpc::Status auth_status = authenticator_->Check(*(context)); \
    if (!auth_status.ok()) return auth_status;                    \
  } while (false)

// --- JobService -------------------------------------------------------------

grpc::Status JobServiceImpl::CreateJob(grpc::ServerContext* context,
                                       const v1::CreateJobRequest* request,
                                       v1::Job* response) {
  PODTRAIN_RPC(context, "CreateJob");
  auto job = coordinator_->CreateJob(*request);
  if (job.ok()) *response = *std::move(job);
  return ToGrpcStatus(job.status());
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context,
                                    const v1::GetJobRequest* request,
                                    v1::Job* response) {
  PODTRAIN_RPC(context, "GetJob");
  auto job = coordinator_->GetJob(request->name());
  if (job.ok()) *response = *std::move(job);
  return ToGrpcStatus(job.status());
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  PODTRAIN_RPC(context, "ListJobs");
  auto jobs = coordinator_->ListJobs(*request);
  if (jobs.ok()) *response = *std::move(jobs);
  return ToGrpcStatus(jobs.status());
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request,
                                       v1::Job* response) {
  PODTRAIN_RPC(context, "CancelJob");
  auto job = coordinator_->CancelJob(request->name());
  if (job.ok()) *response = *std::move(job);
  return ToGrpcStatus(job.status());
}

grpc::Status JobServiceImpl::WatchJob(
    grpc::ServerContext* context, const v1::WatchJobRequest* request,
    grpc::ServerWriter<v1::JobEvent>* writer) {
  PODTRAIN_RPC(context, "WatchJob");
  int64_t cursor = 0;
  while (!context->IsCancelled()) {
    auto events = coordinator_->WaitForEvents(
        request->name(), cursor, absl::Now() + kStreamSlice, &cursor);
    if (!events.ok()) return ToGrpcStatus(events.status());
    for (const v1::JobEvent& event : *events) {
      if (!writer->Write(event)) return grpc::Status::CANCELLED;
    }
    auto job = coordinator_->GetJob(request->name());
    if (!job.ok()) return ToGrpcStatus(job.status());
    if (coordinator::IsTerminal(job->state()) && events->empty()) {
      return grpc::Status::OK;  // every event up to the end was sent
    }
  }
  return grpc::Status::CANCELLED;
}

// --- WorkerService ----------------------------------------------------------

// A callback-API unary call whose body runs inline (it must not block):
// finishes the call with the status `body` returns.
template <typename Body>
grpc::ServerUnaryReactor* FinishInline(grpc::CallbackServerContext* context,
                                       Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(body());
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Register(
    grpc::CallbackServerContext* context, const v1::RegisterRequest* request,
    v1::RegisterResponse* response) {
  return FinishInline(context, [&]() -> grpc::Status {
    PODTRAIN_RPC(context, "Register");
    auto registered = coordinator_->Register(*request);
    if (registered.ok()) *response = *std::move(registered);
    return ToGrpcStatus(registered.status());
  });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(
    grpc::CallbackServerContext* context, const v1::HeartbeatRequest* request,
    v1::HeartbeatResponse* response) {
  return FinishInline(context, [&]() -> grpc::Status {
    PODTRAIN_RPC(context, "Heartbeat");
    auto heartbeat = coordinator_->Heartbeat(*request);
    if (heartbeat.ok()) *response = *std::move(heartbeat);
    return ToGrpcStatus(heartbeat.status());
  });
}

grpc::Status WorkerServiceImpl::JoinGeneration(
    grpc::ServerContext* context, const v1::JoinGenerationRequest* request,
    v1::JoinGenerationResponse* response) {
  PODTRAIN_RPC(context, "JoinGeneration");
  auto joined = coordinator_->JoinGeneration(
      *request, CallDeadline(context, absl::Seconds(10)));
  if (joined.ok()) *response = *std::move(joined);
  return ToGrpcStatus(joined.status());
}

grpc::ServerWriteReactor<v1::StepAssignments>*
WorkerServiceImpl::StreamAssignments(
    grpc::CallbackServerContext* context,
    const v1::StreamAssignmentsRequest* request) {
  auto timer = std::make_unique<ScopedTimer>(
      &coordinator_->metrics().Rpc("StreamAssignments"));
  const grpc::Status auth = authenticator_->Check(*context);
  if (!auth.ok()) {
    // A reactor that only finishes.
    class Refused : public grpc::ServerWriteReactor<v1::StepAssignments> {
     public:
      explicit Refused(const grpc::Status& status) { Finish(status); }
      void OnDone() override { delete this; }
    };
    return new Refused(auth);
  }
  return streams_.Start(*request, std::move(timer));
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ReportStep(
    grpc::CallbackServerContext* context, const v1::ReportStepRequest* request,
    v1::ReportStepResponse*) {
  return FinishInline(context, [&]() -> grpc::Status {
    PODTRAIN_RPC(context, "ReportStep");
    return ToGrpcStatus(coordinator_->ReportStep(*request));
  });
}

grpc::Status WorkerServiceImpl::CommitCheckpoint(
    grpc::ServerContext* context, const v1::CommitCheckpointRequest* request,
    v1::CommitCheckpointResponse* response) {
  PODTRAIN_RPC(context, "CommitCheckpoint");
  auto committed = coordinator_->CommitCheckpoint(*request);
  if (committed.ok()) *response = *std::move(committed);
  return ToGrpcStatus(committed.status());
}

grpc::Status WorkerServiceImpl::RejectCheckpoint(
    grpc::ServerContext* context, const v1::RejectCheckpointRequest* request,
    v1::RejectCheckpointResponse* response) {
  PODTRAIN_RPC(context, "RejectCheckpoint");
  auto rejected = coordinator_->RejectCheckpoint(*request);
  if (rejected.ok()) *response = *std::move(rejected);
  return ToGrpcStatus(rejected.status());
}

grpc::Status WorkerServiceImpl::ResumeFromHeldState(
    grpc::ServerContext* context, const v1::ResumeFromHeldStateRequest* request,
    v1::ResumeFromHeldStateResponse*) {
  PODTRAIN_RPC(context, "ResumeFromHeldState");
  return ToGrpcStatus(coordinator_->ResumeFromHeldState(*request));
}

grpc::Status WorkerServiceImpl::StoreSet(grpc::ServerContext* context,
                                         const v1::StoreSetRequest* request,
                                         v1::StoreSetResponse*) {
  PODTRAIN_RPC(context, "StoreSet");
  return ToGrpcStatus(coordinator_->StoreSet(*request));
}

grpc::Status WorkerServiceImpl::StoreGet(grpc::ServerContext* context,
                                         const v1::StoreGetRequest* request,
                                         v1::StoreGetResponse* response) {
  PODTRAIN_RPC(context, "StoreGet");
  const absl::Duration wait = absl::Milliseconds(request->wait_ms());
  auto value = coordinator_->StoreGet(
      *request, CallDeadline(context, std::min(wait, absl::Seconds(60))));
  if (value.ok()) *response = *std::move(value);
  return ToGrpcStatus(value.status());
}

// --- AssignmentStreams
// --------------------------------------------------------

// One StreamAssignments call. Owned by a shared_ptr to itself from Start to
// OnDone, and by the pump while it fetches for it. One message in flight at
// a time (`writing_`); its completion asks for the next.
class AssignmentStreams::Stream
    : public grpc::ServerWriteReactor<v1::StepAssignments> {
 public:
  Stream(AssignmentStreams* owner, const v1::StreamAssignmentsRequest& request,
         std::unique_ptr<ScopedTimer> timer)
      : owner_(owner), next_(request), timer_(std::move(timer)) {}

  void set_self(std::shared_ptr<Stream> self) { self_ = std::move(self); }
  // Whether a move of its job's horizon to `horizon` may give this stream
  // something to send (kAnyChange: any change may).
  bool Wants(int64_t horizon) const { return wake_horizon_.load() <= horizon; }
  const std::shared_ptr<Stream>& self() const { return self_; }

  // On the pump, with the other ready streams (Pump): BeginFetch says what
  // to ask the coordinator for (nothing while a write is in flight, whose
  // completion asks again, or once the stream is ending); EndFetch starts
  // writing the answer, or ends the stream. Between the two the stream's
  // lock is free, so OnCancel may end it; EndFetch then drops the answer.
  std::optional<coordinator::Coordinator::AssignmentFetch> BeginFetch() {
    {
      absl::MutexLock lock(&mu_);
      if (done_ || finished_ || writing_) return std::nullopt;
      if (!cancelled_) {
        coordinator::Coordinator::AssignmentFetch fetch;
        fetch.request = next_;
        fetch.continuation = continuation_;
        fetch.wake_horizon = &wake_horizon_;
        return fetch;
      }
      finished_ = true;
    }
    Finish(grpc::Status::CANCELLED);
    return std::nullopt;
  }

  void EndFetch(absl::StatusOr<std::vector<v1::StepAssignment>> assignments) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (done_ || finished_ || writing_) return;
      if (cancelled_) {
        finished_ = true;
        finish = grpc::Status::CANCELLED;
      } else if (absl::IsDeadlineExceeded(assignments.status())) {
        return;  // later: its wake horizon is set
      } else if (!assignments.ok()) {
        finished_ = true;
        finish = ToGrpcStatus(assignments.status());
      } else if (assignments->empty()) {  // the job's last step
        finished_ = true;
        finish = grpc::Status::OK;
      } else {
        next_.set_from_step(assignments->back().step() + 1);
        continuation_ = true;
        wake_horizon_.store(0);
        message_.clear_assignments();
        for (v1::StepAssignment& assignment : *assignments) {
          *message_.add_assignments() = std::move(assignment);
        }
        writing_ = true;
      }
    }
    // Outside the lock: gRPC may run a reaction on this thread. message_
    // is not touched again until OnWriteDone.
    if (finish.has_value()) {
      Finish(*finish);
    } else {
      StartWrite(&message_);
    }
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if ((!ok || cancelled_) && !finished_) {  // the client is gone
        finished_ = true;
        finish = grpc::Status::CANCELLED;
      }
    }
    if (finish.has_value()) {
      Finish(*finish);
    } else {
      owner_->MarkReady(self_);  // there may be more already
    }
  }

  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      if (!writing_ && !finished_) finished_ = finish = true;
    }
    if (finish) Finish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    owner_->Remove(self_);
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    self_.reset();  // may delete this: the last statement
  }

 private:
  AssignmentStreams* const owner_;
  std::shared_ptr<Stream> self_;  // until OnDone
  absl::Mutex mu_;
  v1::StreamAssignmentsRequest next_ ABSL_GUARDED_BY(mu_);
  bool continuation_ ABSL_GUARDED_BY(mu_) = false;
  v1::StepAssignments message_;  // set by EndFetch, in flight while writing_
  // The horizon that releases its next message (0: unknown, fetch on any
  // change); set by the coordinator under its lock when a fetch finds
  // nothing, so no move of the horizon after that fetch is missed.
  std::atomic<int64_t> wake_horizon_{0};
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called or due
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  const std::unique_ptr<ScopedTimer> timer_;
};

AssignmentStreams::AssignmentStreams(coordinator::Coordinator* coordinator)
    : coordinator_(coordinator) {
  coordinator_->SetAssignmentListener(
      [this](const std::string& job, int64_t horizon) {
        JobChanged(job, horizon);
      });
  pump_ = std::thread([this] { Pump(); });
}

AssignmentStreams::~AssignmentStreams() {
  coordinator_->SetAssignmentListener(nullptr);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  pump_.join();
}

grpc::ServerWriteReactor<v1::StepAssignments>* AssignmentStreams::Start(
    const v1::StreamAssignmentsRequest& request,
    std::unique_ptr<ScopedTimer> timer) {
  auto stream = std::make_shared<Stream>(this, request, std::move(timer));
  stream->set_self(stream);
  const std::string job = coordinator_->WorkerJob(request.worker_id());
  {
    absl::MutexLock lock(&mu_);
    streams_[job].insert(stream);
    ready_.push_back(stream);
  }
  return stream.get();
}

void AssignmentStreams::JobChanged(const std::string& job, int64_t horizon) {
  absl::MutexLock lock(&mu_);
  if (job.empty()) {
    all_changed_ = true;
  } else {
    auto [it, added] = changed_jobs_.emplace(job, horizon);
    if (!added) it->second = std::max(it->second, horizon);
  }
}

void AssignmentStreams::MarkReady(std::shared_ptr<Stream> stream) {
  absl::MutexLock lock(&mu_);
  ready_.push_back(std::move(stream));
}

void AssignmentStreams::Remove(const std::shared_ptr<Stream>& stream) {
  absl::MutexLock lock(&mu_);
  for (auto it = streams_.begin(); it != streams_.end(); ++it) {
    if (it->second.erase(stream) > 0) {
      if (it->second.empty()) streams_.erase(it);
      return;
    }
  }
}

void AssignmentStreams::FetchAll(
    const std::vector<std::shared_ptr<Stream>>& batch) {
  std::vector<Stream*> asking;
  std::vector<coordinator::Coordinator::AssignmentFetch> fetches;
  for (size_t begin = 0; begin < batch.size(); begin += kMaxFetchesPerLock) {
    asking.clear();
    fetches.clear();
    const size_t end = std::min(batch.size(), begin + kMaxFetchesPerLock);
    for (size_t i = begin; i < end; ++i) {
      auto fetch = batch[i]->BeginFetch();
      if (!fetch.has_value()) continue;
      asking.push_back(batch[i].get());
      fetches.push_back(*std::move(fetch));
    }
    if (fetches.empty()) continue;
    coordinator_->NextAssignmentsBatch(fetches, kMaxStepsPerMessage);
    for (size_t i = 0; i < asking.size(); ++i) {
      asking[i]->EndFetch(std::move(fetches[i].result));
    }
  }
}

void AssignmentStreams::Pump() {
  while (true) {
    std::vector<std::shared_ptr<Stream>> batch;
    {
      absl::MutexLock lock(&mu_);
      const auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !ready_.empty() || all_changed_ ||
               !changed_jobs_.empty();
      };
      mu_.Await(absl::Condition(&work));
      if (stopping_) return;
      batch.assign(ready_.begin(), ready_.end());
      ready_.clear();
      // Of a job whose horizon moved, only the streams that move releases
      // something for: in a world reporting every k steps, 1/k of them.
      for (const auto& [job, streams] : streams_) {
        int64_t horizon = coordinator::Coordinator::kAnyChange;
        if (!all_changed_) {
          auto changed = changed_jobs_.find(job);
          if (changed == changed_jobs_.end()) continue;
          horizon = changed->second;
        }
        for (const std::shared_ptr<Stream>& stream : streams) {
          if (stream->Wants(horizon)) batch.push_back(stream);
        }
      }
      all_changed_ = false;
      changed_jobs_.clear();
    }
    // A stream both ready and woken by the horizon is fetched once.
    std::sort(batch.begin(), batch.end());
    batch.erase(std::unique(batch.begin(), batch.end()), batch.end());
    FetchAll(batch);
  }
}

}  // namespace podtrain::services
