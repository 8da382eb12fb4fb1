#include "common/metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <prometheus/text_serializer.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace podtrain {
namespace {

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Answers GET /metrics with the registry; anything else with 404.
MHD_Result Answer(void* server_ptr, struct MHD_Connection* connection,
                  const char* url, const char* method, const char*, const char*,
                  size_t*, void**) {
  const auto* server = static_cast<const MetricsServer*>(server_ptr);
  const bool found =
      std::strcmp(method, "GET") == 0 && std::strcmp(url, "/metrics") == 0;
  const std::string body =
      found ? SerializeMetrics(server->registry()) : "not found\n";
  struct MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(response, "Content-Type", kContentType);
  const MHD_Result queued = MHD_queue_response(
      connection, found ? MHD_HTTP_OK : MHD_HTTP_NOT_FOUND, response);
  MHD_destroy_response(response);
  return queued;
}

// "host:port" with an IPv4 host (or empty for any address).
absl::StatusOr<sockaddr_in> ParseAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "' is not host:port"));
  }
  sockaddr_in socket_address{};
  socket_address.sin_family = AF_INET;
  socket_address.sin_port = htons(port);
  const std::string host = address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0") {
    socket_address.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (inet_pton(AF_INET, host.c_str(), &socket_address.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", address,
                                                   "': '", host,
                                                   "' is not an IPv4 address"));
  }
  return socket_address;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address,
    std::shared_ptr<prometheus::Registry> registry) {
  absl::StatusOr<sockaddr_in> socket_address = ParseAddress(address);
  if (!socket_address.ok()) return socket_address.status();
  auto server = std::unique_ptr<MetricsServer>(new MetricsServer);
  server->registry_ = std::move(registry);
  server->daemon_ =
      MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0,
                       nullptr, nullptr, &Answer, server.get(),
                       MHD_OPTION_SOCK_ADDR, &*socket_address, MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on ", address, ": ", std::strerror(errno),
        " (in use, or not an address of this host?)"));
  }
  const union MHD_DaemonInfo* info =
      MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info != nullptr ? info->port : 0;
  if (server->port_ == 0) {
    return absl::InternalError("metrics server started on an unknown port");
  }
  return server;
}

MetricsServer::~MetricsServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

std::string SerializeMetrics(const prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (double bound = 1e-4; bound < 150; bound *= 2.5) buckets.push_back(bound);
  return buckets;
}

}  // namespace podtrain
