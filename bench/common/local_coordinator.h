// For benchmarks: a real podtrain coordinator (gRPC server on 127.0.0.1, an
// OS-chosen port, SQLite journal) inside the benchmark's process, with one
// job on a synthetic Fashion-MNIST-shaped dataset (28x28x1, 10 classes).
// What worker/collectives_test_util does for tests, without testonly.
//
//   v1::JobSpec spec = ReferenceMlpSpec();
//   ASSIGN_OR_RETURN(auto coordinator, LocalCoordinator::Start(dir, spec,
//                                                              60000));
//   ConnectGloo(options, coordinator->NewStore(prefix, absl::Seconds(30)));
//
// Thread-safety: thread-safe after Start.

#ifndef PODTRAIN_BENCH_COMMON_LOCAL_COORDINATOR_H_
#define PODTRAIN_BENCH_COMMON_LOCAL_COORDINATOR_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "services/coordinator_server.h"

namespace podtrain::bench {

// The reference recipe of deploy/local/reference_job.yaml: MLP 784-1024-
// 1024-10, softmax cross-entropy, SGD with Nesterov momentum 0.9, global
// batch 256, checkpoint every 100 steps keeping 3. `dataset` and
// checkpoint.directory are left for the caller.
v1::JobSpec ReferenceMlpSpec();

class LocalCoordinator {
 public:
  // Writes a synthetic manifest of `num_examples` examples under
  // dir/dataset, starts a coordinator journaling to dir/journal.db, and
  // creates one job from `spec` (its dataset field is set here).
  static absl::StatusOr<std::unique_ptr<LocalCoordinator>> Start(
      const std::string& dir, v1::JobSpec spec, int64_t num_examples);

  const std::string& job() const { return job_; }
  std::string address() const;
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  services::CoordinatorServer& server() { return *server_; }

 private:
  LocalCoordinator() = default;

  std::unique_ptr<services::CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string job_;
};

}  // namespace podtrain::bench

#endif  // PODTRAIN_BENCH_COMMON_LOCAL_COORDINATOR_H_
