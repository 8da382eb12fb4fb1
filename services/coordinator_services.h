// The coordinator's gRPC front ends: JobService (public) and WorkerService
// (internal). Each RPC forwards to coordinator::Coordinator in a line or a
// short loop (streams); validation, decisions and the lock live there. Codes
// and messages pass through unchanged (grpc_status.h).
//
// Streams wait in bounded slices (kStreamSlice) so a cancelled client or a
// server shutdown is noticed promptly.
//
// Thread-safety: thread-safe (the Coordinator is).

#ifndef PODTRAIN_SERVICES_COORDINATOR_SERVICES_H_
#define PODTRAIN_SERVICES_COORDINATOR_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <utility>

#include "coordinator/coordinator.h"
#include "proto/job.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace podtrain::services {

// Checks the caller's credentials: with a token configured, every call must
// carry the metadata "authorization: Bearer <token>"; others are
// UNAUTHENTICATED. An empty token lets every call through (loopback demos).
class Authenticator {
 public:
  explicit Authenticator(std::string bearer_token)
      : bearer_token_(std::move(bearer_token)) {}
  grpc::Status Check(const grpc::ServerContext& context) const;

 private:
  const std::string bearer_token_;
};

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(coordinator::Coordinator* coordinator,
                 const Authenticator* authenticator)
      : coordinator_(coordinator), authenticator_(authenticator) {}

  grpc::Status CreateJob(grpc::ServerContext* context,
                         const v1::CreateJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context,
                      const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context,
                        const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context,
                         const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context,
                        const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;

 private:
  coordinator::Coordinator* const coordinator_;
  const Authenticator* const authenticator_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(coordinator::Coordinator* coordinator,
                    const Authenticator* authenticator)
      : coordinator_(coordinator), authenticator_(authenticator) {}

  grpc::Status Register(grpc::ServerContext* context,
                        const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context,
                         const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status JoinGeneration(grpc::ServerContext* context,
                              const v1::JoinGenerationRequest* request,
                              v1::JoinGenerationResponse* response) override;
  grpc::Status StreamAssignments(
      grpc::ServerContext* context, const v1::StreamAssignmentsRequest* request,
      grpc::ServerWriter<v1::StepAssignment>* writer) override;
  grpc::Status ReportStep(grpc::ServerContext* context,
                          const v1::ReportStepRequest* request,
                          v1::ReportStepResponse* response) override;
  grpc::Status CommitCheckpoint(
      grpc::ServerContext* context, const v1::CommitCheckpointRequest* request,
      v1::CommitCheckpointResponse* response) override;
  grpc::Status RejectCheckpoint(
      grpc::ServerContext* context, const v1::RejectCheckpointRequest* request,
      v1::RejectCheckpointResponse* response) override;
  grpc::Status StoreSet(grpc::ServerContext* context,
                        const v1::StoreSetRequest* request,
                        v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context,
                        const v1::StoreGetRequest* request,
                        v1::StoreGetResponse* response) override;

 private:
  coordinator::Coordinator* const coordinator_;
  const Authenticator* const authenticator_;
};

}  // namespace podtrain::services

#endif  // PODTRAIN_SERVICES_COORDINATOR_SERVICES_H_
