// A plaintext gRPC server that serves grpc.health.v1.Health and nothing
// else: the port Kubernetes' gRPC probes use when the coordinator's main
// port requires (mutual) TLS, which the kubelet cannot speak. It answers for
// the whole server (service ""), with the status its owner sets to mirror
// the main port; any other service name is unknown (Check: NOT_FOUND; Watch:
// SERVICE_UNKNOWN), as the health protocol says. No other service and no
// server reflection are reachable on it, so plaintext exposes no API.
//
//   ASSIGN_OR_RETURN(auto health, HealthServer::Start("0.0.0.0:8081"));
//   health->SetServing(true);   // once the main port is up
//   ...
//   health->Shutdown();         // NOT_SERVING to watchers, then closed
//
// Why not gRPC's default health service: a server whose only service is
// that one (it is added when the server starts) fails to build ("at least
// one of the completion queues must be frequently polled") in gRPC 1.51.
//
// Thread-safety: thread-safe; Shutdown may be called more than once.

#ifndef PODTRAIN_SERVICES_HEALTH_SERVER_H_
#define PODTRAIN_SERVICES_HEALTH_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/health.grpc.pb.h"

namespace podtrain::services {

class HealthServer {
 public:
  // Serves on `address` (host:port; port 0: the OS picks, see port()),
  // reporting NOT_SERVING until SetServing(true).
  static absl::StatusOr<std::unique_ptr<HealthServer>> Start(
      const std::string& address);

  ~HealthServer();

  int port() const { return port_; }

  // The status Check reports and Watch streams for service "".
  void SetServing(bool serving);

  // Sends NOT_SERVING to every Watch stream and ends it, then stops the
  // server.
  void Shutdown();

 private:
  class Service;

  HealthServer() = default;

  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace podtrain::services

#endif  // PODTRAIN_SERVICES_HEALTH_SERVER_H_
