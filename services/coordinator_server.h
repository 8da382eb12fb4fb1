// podtrain-coordinator's server: the Coordinator behind JobService and
// WorkerService on one gRPC port, with the standard grpc.health.v1 health
// service (unauthenticated, for probes), server reflection, keepalive
// settings that suit workers' long-lived streams, optional bearer-token
// authentication, and a thread that runs Coordinator::Tick.
//
// TLS (options.tls, services/tls.h): the port serves TLS, mutual by default,
// so a client without a certificate signed by the configured CA fails its
// handshake and never reaches a service. Health on that port then needs TLS
// too, which Kubernetes' gRPC probes cannot do; a plaintext_health_address
// adds a second, plaintext port that serves grpc.health.v1.Health and
// nothing else (no reflection), reporting the same status as the main port
// (services/health_server.h). The job and worker APIs are never reachable in
// plaintext there.
//
// Thread-safety: Start, port and coordinator are thread-safe; Shutdown may
// be called from any thread, once or more.

#ifndef PODTRAIN_SERVICES_COORDINATOR_SERVER_H_
#define PODTRAIN_SERVICES_COORDINATOR_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "coordinator/coordinator.h"
#include "services/coordinator_services.h"
#include "services/health_server.h"
#include "services/tls.h"

namespace podtrain::services {

struct CoordinatorServerOptions {
  // host:port; port 0 lets the OS pick (see port()).
  std::string address = "127.0.0.1:0";
  // If set, every JobService/WorkerService call needs
  // "authorization: Bearer <token>".
  std::string bearer_token;
  // If set, the port above serves TLS (see the top of this file); unset:
  // plaintext.
  std::optional<TlsOptions> tls;
  // If set, host:port (port 0: the OS picks; see health_port()) of a
  // plaintext port serving only the health service, for probes.
  std::string plaintext_health_address;
  coordinator::CoordinatorOptions coordinator;
  // Where /metrics is served (port 0: the OS picks); empty: not served.
  std::string metrics_address = "127.0.0.1:0";
  // How often Coordinator::Tick runs (lease expiry, last calls).
  absl::Duration tick_interval = absl::Milliseconds(50);
};

class CoordinatorServer {
 public:
  // Recovers the coordinator from its journal, then starts serving.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      const CoordinatorServerOptions& options, Clock* clock);

  ~CoordinatorServer();

  int port() const { return port_; }
  // The /metrics port (0 if not served).
  int metrics_port() const {
    return metrics_server_ == nullptr ? 0 : metrics_server_->port();
  }
  // The plaintext health-only port (0 if not served).
  int health_port() const {
    return health_server_ == nullptr ? 0 : health_server_->port();
  }
  coordinator::Coordinator* coordinator() { return coordinator_.get(); }

  // Reports NOT_SERVING (on both ports), stops the tick thread, finishes
  // in-flight calls (streams are cancelled after a grace of one second),
  // then closes the health-only port.
  void Shutdown();
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  CoordinatorServer() = default;

  std::unique_ptr<coordinator::Coordinator> coordinator_;
  std::unique_ptr<Authenticator> authenticator_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsServer> metrics_server_;
  // Null unless options.plaintext_health_address is set.
  std::unique_ptr<HealthServer> health_server_;
  int port_ = 0;
  absl::Duration tick_interval_;
  std::thread ticker_;
  absl::Notification stopping_;
  absl::Notification stopped_;
  std::atomic<bool> shutdown_started_{false};
};

}  // namespace podtrain::services

#endif  // PODTRAIN_SERVICES_COORDINATOR_SERVER_H_
