#include "services/health_server.h"

#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/impl/server_builder_option.h>

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"

namespace podtrain::services {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// Removes the builder plugins (server reflection, which
// InitProtoReflectionServerBuilderPlugin registers for every builder in the
// process) so this port serves health and nothing else.
class WithoutPlugins : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->clear();
  }
};

}  // namespace

class HealthServer::Service : public grpc::health::v1::Health::Service {
 public:
  void SetServing(bool serving) {
    absl::MutexLock lock(&mu_);
    serving_ = serving;
    changed_.SignalAll();
  }

  void Shutdown() {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    changed_.SignalAll();
  }

  grpc::Status Check(grpc::ServerContext*, const HealthCheckRequest* request,
                     HealthCheckResponse* response) override {
    if (!request->service().empty()) {
      return grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("unknown service '", request->service(),
                       "': this port reports the whole server (\"\") only"));
    }
    absl::MutexLock lock(&mu_);
    response->set_status(StatusLocked(/*known=*/true));
    return grpc::Status::OK;
  }

  // Sends the status now and again whenever it changes, until the client
  // goes away or the server shuts down (then NOT_SERVING is the last word).
  grpc::Status Watch(grpc::ServerContext* context,
                     const HealthCheckRequest* request,
                     grpc::ServerWriter<HealthCheckResponse>* writer) override {
    const bool known = request->service().empty();
    bool sent = false;
    HealthCheckResponse::ServingStatus last = HealthCheckResponse::UNKNOWN;
    while (true) {
      HealthCheckResponse response;
      bool final = false;
      {
        absl::MutexLock lock(&mu_);
        while (sent && !shutdown_ && StatusLocked(known) == last) {
          // A sync handler learns of a client that left only by asking, so
          // the wait wakes up now and then to ask.
          if (context->IsCancelled()) return grpc::Status::CANCELLED;
          changed_.WaitWithTimeout(&mu_, absl::Seconds(1));
        }
        final = shutdown_;
        last = StatusLocked(known);
        response.set_status(last);
      }
      // Outside the lock: Write blocks while the client's window is full.
      if (!writer->Write(response)) return grpc::Status::CANCELLED;
      sent = true;
      if (final) return grpc::Status::OK;
    }
  }

 private:
  HealthCheckResponse::ServingStatus StatusLocked(bool known)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!known) return HealthCheckResponse::SERVICE_UNKNOWN;
    return serving_ && !shutdown_ ? HealthCheckResponse::SERVING
                                  : HealthCheckResponse::NOT_SERVING;
  }

  absl::Mutex mu_;
  absl::CondVar changed_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<HealthServer>> HealthServer::Start(
    const std::string& address) {
  auto server = std::unique_ptr<HealthServer>(new HealthServer);
  server->service_ = std::make_unique<Service>();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  // gRPC's default health service (enabled process-wide by the coordinator)
  // would claim the same method names.
  builder.SetOption(
      std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
  builder.SetOption(std::make_unique<WithoutPlugins>());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve health on ", address,
                     " (in use, or not an address of this host?)"));
  }
  return server;
}

void HealthServer::SetServing(bool serving) { service_->SetServing(serving); }

void HealthServer::Shutdown() {
  service_->Shutdown();  // ends Watch handlers, which Shutdown waits for
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
    server_->Wait();
  }
}

HealthServer::~HealthServer() { Shutdown(); }

}  // namespace podtrain::services
