// The coordinator's gRPC front ends: JobService (public) and WorkerService
// (internal). Each RPC forwards to coordinator::Coordinator in a line or a
// short loop (streams); validation, decisions and the lock live there. Codes
// and messages pass through unchanged (grpc_status.h).
//
// Streams wait in bounded slices (kStreamSlice) so a cancelled client or a
// server shutdown is noticed promptly. StreamAssignments, which every worker
// holds open, is served by gRPC's callback API instead (AssignmentStreams):
// a thread per stream, all woken at every step, was what limited a
// coordinator with thousands of workers (bench/bench_coordinator.sh).
//
// Thread-safety: thread-safe (the Coordinator is).

#ifndef PODTRAIN_SERVICES_COORDINATOR_SERVICES_H_
#define PODTRAIN_SERVICES_COORDINATOR_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
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
  grpc::Status Check(const grpc::ServerContextBase& context) const;

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

// Serves every StreamAssignments call with one thread: each stream is a
// gRPC callback reactor, and a "pump" thread, told by the coordinator which
// job's assignments may have changed (Coordinator::SetAssignmentListener),
// fetches what each idle stream of that job may now send (all of them
// under one hold of the coordinator's lock: NextAssignmentsBatch) and
// starts their writes; gRPC's own threads carry them out.
// Each fetch is one message of up to 64 steps (as many as the look-ahead
// and the world's report interval let out; see StepAssignments); the
// worker's request counts as its progress and the stream's later fetches
// do not; the coordinator's errors end the stream as its status.
//
// Thread-safety: thread-safe. Lock order: a stream's lock, then the
// coordinator's, then the pump's.
class AssignmentStreams {
 public:
  explicit AssignmentStreams(coordinator::Coordinator* coordinator);
  // Detaches from the coordinator and stops the pump.
  // REQUIRES: every stream is done (the server has shut down).
  ~AssignmentStreams();

  AssignmentStreams(const AssignmentStreams&) = delete;
  AssignmentStreams& operator=(const AssignmentStreams&) = delete;

  // A new stream for `request`; `timer` (may be null) ends with it.
  grpc::ServerWriteReactor<v1::StepAssignments>* Start(
      const v1::StreamAssignmentsRequest& request,
      std::unique_ptr<ScopedTimer> timer);

 private:
  class Stream;

  // From the coordinator, under its lock: `job` ("" for all) changed; its
  // horizon moved to `horizon` (or Coordinator::kAnyChange).
  void JobChanged(const std::string& job, int64_t horizon);
  void MarkReady(std::shared_ptr<Stream> stream);
  // On the pump: what each of `batch` may send now, asked of the
  // coordinator in as few holds of its lock as kMaxFetchesPerLock allows.
  void FetchAll(const std::vector<std::shared_ptr<Stream>>& batch);
  void Remove(const std::shared_ptr<Stream>& stream);
  void Pump();

  coordinator::Coordinator* const coordinator_;
  absl::Mutex mu_;
  // Live streams by the job they belong to.
  std::map<std::string, std::set<std::shared_ptr<Stream>>> streams_
      ABSL_GUARDED_BY(mu_);
  // To fetch for: streams that asked, and every stream of changed jobs.
  std::deque<std::shared_ptr<Stream>> ready_ ABSL_GUARDED_BY(mu_);
  // Changed jobs, with the highest horizon each moved to.
  std::map<std::string, int64_t> changed_jobs_ ABSL_GUARDED_BY(mu_);
  bool all_changed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread pump_;
};

// What every worker calls all the time is served through gRPC's callback
// API: the assignment streams (AssignmentStreams) and the short,
// non-blocking Register, Heartbeat and ReportStep, which run inline on
// gRPC's threads instead of being handed to a synchronous-server thread.
// The calls that block (JoinGeneration and StoreGet wait; CommitCheckpoint
// fsyncs the journal) stay synchronous.
using WorkerServiceBase = v1::WorkerService::WithCallbackMethod_Register<
    v1::WorkerService::WithCallbackMethod_Heartbeat<
        v1::WorkerService::WithCallbackMethod_StreamAssignments<
            v1::WorkerService::WithCallbackMethod_ReportStep<
                v1::WorkerService::Service>>>>;

class WorkerServiceImpl final : public WorkerServiceBase {
 public:
  WorkerServiceImpl(coordinator::Coordinator* coordinator,
                    const Authenticator* authenticator)
      : coordinator_(coordinator),
        authenticator_(authenticator),
        streams_(coordinator) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::Status JoinGeneration(grpc::ServerContext* context,
                              const v1::JoinGenerationRequest* request,
                              v1::JoinGenerationResponse* response) override;
  grpc::ServerWriteReactor<v1::StepAssignments>* StreamAssignments(
      grpc::CallbackServerContext* context,
      const v1::StreamAssignmentsRequest* request) override;
  grpc::ServerUnaryReactor* ReportStep(
      grpc::CallbackServerContext* context,
      const v1::ReportStepRequest* request,
      v1::ReportStepResponse* response) override;
  grpc::Status CommitCheckpoint(
      grpc::ServerContext* context, const v1::CommitCheckpointRequest* request,
      v1::CommitCheckpointResponse* response) override;
  grpc::Status RejectCheckpoint(
      grpc::ServerContext* context, const v1::RejectCheckpointRequest* request,
      v1::RejectCheckpointResponse* response) override;
  grpc::Status ResumeFromHeldState(
      grpc::ServerContext* context,
      const v1::ResumeFromHeldStateRequest* request,
      v1::ResumeFromHeldStateResponse* response) override;
  grpc::Status StoreSet(grpc::ServerContext* context,
                        const v1::StoreSetRequest* request,
                        v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context,
                        const v1::StoreGetRequest* request,
                        v1::StoreGetResponse* response) override;

 private:
  coordinator::Coordinator* const coordinator_;
  const Authenticator* const authenticator_;
  AssignmentStreams streams_;
};

}  // namespace podtrain::services

#endif  // PODTRAIN_SERVICES_COORDINATOR_SERVICES_H_
