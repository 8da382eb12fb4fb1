#include "services/coordinator_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace podtrain::services {
namespace {

std::string Describe(const CoordinatorServerOptions& options) {
  if (!options.tls.has_value()) return "plaintext";
  return options.tls->require_client_cert ? "mutual TLS" : "TLS";
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorServerOptions& options, Clock* clock) {
  // Credentials first: a TLS misconfiguration is reported before the
  // journal is opened or a port taken.
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (options.tls.has_value()) {
    ASSIGN_OR_RETURN(credentials, MakeServerCredentials(*options.tls));
  }
  auto server = std::unique_ptr<CoordinatorServer>(new CoordinatorServer);
  ASSIGN_OR_RETURN(server->coordinator_, coordinator::Coordinator::Create(
                                             options.coordinator, clock));
  server->authenticator_ =
      std::make_unique<Authenticator>(options.bearer_token);
  server->job_service_ = std::make_unique<JobServiceImpl>(
      server->coordinator_.get(), server->authenticator_.get());
  server->worker_service_ = std::make_unique<WorkerServiceImpl>(
      server->coordinator_.get(), server->authenticator_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, credentials, &server->port_);
  builder.RegisterService(server->job_service_.get());
  builder.RegisterService(server->worker_service_.get());
  // Workers hold streams open for hours and ping every few seconds to keep
  // them alive through proxies; gRPC's defaults would answer such pings with
  // GOAWAY "too_many_pings" (ops research: keepalive defaults).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address,
                     " (in use, or not an address of this host?)"));
  }
  if (!options.plaintext_health_address.empty()) {
    ASSIGN_OR_RETURN(server->health_server_,
                     HealthServer::Start(options.plaintext_health_address));
    server->health_server_->SetServing(true);
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  if (!options.metrics_address.empty()) {
    ASSIGN_OR_RETURN(
        server->metrics_server_,
        MetricsServer::Start(options.metrics_address,
                             server->coordinator_->metrics().registry()));
  }
  server->tick_interval_ = options.tick_interval;
  CoordinatorServer* raw = server.get();
  server->ticker_ = std::thread([raw] {
    while (
        !raw->stopping_.WaitForNotificationWithTimeout(raw->tick_interval_)) {
      raw->coordinator_->Tick();
    }
  });
  LOG(INFO) << "podtrain-coordinator serving " << Describe(options)
            << " on port " << server->port_
            << (options.bearer_token.empty() ? "" : " (bearer token required)")
            << ", metrics on port " << server->metrics_port()
            << ", plaintext health on port " << server->health_port();
  return server;
}

void CoordinatorServer::Shutdown() {
  if (shutdown_started_.exchange(true)) {
    stopped_.WaitForNotification();
    return;
  }
  // Members are null when Start failed part way (a bad certificate, a port
  // in use); the destructor still comes here.
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
  }
  if (health_server_ != nullptr) health_server_->SetServing(false);
  if (coordinator_ != nullptr) {
    coordinator_->Shutdown();  // wakes blocked calls so Shutdown is prompt
  }
  stopping_.Notify();
  if (ticker_.joinable()) ticker_.join();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
    server_->Wait();
  }
  // Last, so probes see NOT_SERVING while the main port drains.
  if (health_server_ != nullptr) health_server_->Shutdown();
  stopped_.Notify();
}

void CoordinatorServer::Wait() { stopped_.WaitForNotification(); }

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace podtrain::services
