#include "common/metrics.h"

#include <prometheus/text_serializer.h>

#include <exception>

#include "absl/strings/str_cat.h"

namespace podtrain {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address,
    std::shared_ptr<prometheus::Registry> registry) {
  auto server = std::unique_ptr<MetricsServer>(new MetricsServer);
  try {
    // prometheus-cpp reports bind failures by throwing (CivetException).
    server->exposer_ = std::make_unique<prometheus::Exposer>(address, 2);
  } catch (const std::exception& error) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", error.what()));
  }
  server->registry_ = std::move(registry);
  server->exposer_->RegisterCollectable(server->registry_);
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address));
  }
  server->port_ = ports.front();
  return server;
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
