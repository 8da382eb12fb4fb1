// Client channels to the coordinator, set up for workers and tools that must
// ride out a coordinator restart: retry the connection every 100 ms to 1 s
// (gRPC's default backoff starts at 1 s and grows to 120 s), and keepalive
// pings the server permits (see coordinator_server.cc). The minimum connect
// timeout (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20 s) is left at its default so
// a connection attempt to a busy, just-restarted server has time to finish
// its handshake. Plaintext unless the caller passes TLS channel credentials
// (services/tls.h).
//
// Thread-safety: free functions; channels are thread-safe.

#ifndef PODTRAIN_SERVICES_CHANNEL_H_
#define PODTRAIN_SERVICES_CHANNEL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <utility>

namespace podtrain::services {

// A channel to the coordinator at `address` secured by `credentials`
// (services/tls.h MakeChannelCredentials); null means plaintext. With TLS
// the host part of `address` is the name the coordinator's certificate must
// carry (a DNS or IP subjectAltName).
inline std::shared_ptr<grpc::Channel> MakeCoordinatorChannel(
    const std::string& address,
    std::shared_ptr<grpc::ChannelCredentials> credentials) {
  if (credentials == nullptr) {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  return grpc::CreateCustomChannel(address, std::move(credentials), args);
}

// A plaintext channel to the coordinator at `address`.
inline std::shared_ptr<grpc::Channel> MakeCoordinatorChannel(
    const std::string& address) {
  return MakeCoordinatorChannel(address, nullptr);
}

}  // namespace podtrain::services

#endif  // PODTRAIN_SERVICES_CHANNEL_H_
