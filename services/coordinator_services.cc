#include "services/coordinator_services.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "services/grpc_status.h"

namespace podtrain::services {
namespace {

// How long a stream or a blocking call waits in one go before it checks
// whether its client is still there.
constexpr absl::Duration kStreamSlice = absl::Milliseconds(500);
constexpr int64_t kAssignmentsPerWrite = 8;

// The earlier of the client's deadline and now + `most`. Blocking calls
// return DEADLINE_EXCEEDED at this point and the client calls again.
absl::Time CallDeadline(const grpc::ServerContext* context,
                        absl::Duration most) {
  const absl::Time client = absl::FromChrono(context->deadline());
  return std::min(client, absl::Now() + most);
}

}  // namespace

grpc::Status Authenticator::Check(const grpc::ServerContext& context) const {
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

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* context,
                                         const v1::RegisterRequest* request,
                                         v1::RegisterResponse* response) {
  PODTRAIN_RPC(context, "Register");
  auto registered = coordinator_->Register(*request);
  if (registered.ok()) *response = *std::move(registered);
  return ToGrpcStatus(registered.status());
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  PODTRAIN_RPC(context, "Heartbeat");
  auto heartbeat = coordinator_->Heartbeat(*request);
  if (heartbeat.ok()) *response = *std::move(heartbeat);
  return ToGrpcStatus(heartbeat.status());
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

grpc::Status WorkerServiceImpl::StreamAssignments(
    grpc::ServerContext* context, const v1::StreamAssignmentsRequest* request,
    grpc::ServerWriter<v1::StepAssignment>* writer) {
  PODTRAIN_RPC(context, "StreamAssignments");
  v1::StreamAssignmentsRequest next = *request;
  while (!context->IsCancelled()) {
    auto assignments = coordinator_->NextAssignments(
        next, kAssignmentsPerWrite, absl::Now() + kStreamSlice);
    if (absl::IsDeadlineExceeded(assignments.status())) continue;  // a slice
    if (!assignments.ok()) return ToGrpcStatus(assignments.status());
    if (assignments->empty()) return grpc::Status::OK;  // the job's last step
    for (const v1::StepAssignment& assignment : *assignments) {
      if (!writer->Write(assignment)) return grpc::Status::CANCELLED;
    }
    next.set_from_step(assignments->back().step() + 1);
  }
  return grpc::Status::CANCELLED;
}

grpc::Status WorkerServiceImpl::ReportStep(grpc::ServerContext* context,
                                           const v1::ReportStepRequest* request,
                                           v1::ReportStepResponse*) {
  PODTRAIN_RPC(context, "ReportStep");
  return ToGrpcStatus(coordinator_->ReportStep(*request));
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

}  // namespace podtrain::services
