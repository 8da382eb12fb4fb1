// Prometheus metrics plumbing shared by the coordinator and the workers:
// a /metrics HTTP endpoint, bucket layouts, and a scoped timer for
// histograms. Metrics live in prometheus-cpp registries; the endpoint is
// served by GNU libmicrohttpd rather than prometheus-cpp's civetweb
// exposer, whose threads have fixed 100 KB stacks: in a worker, whose
// libraries (OpenBLAS, glog, libtorch) need ~108 KB of static TLS per
// thread, civetweb cannot start a single thread. Metric names follow Prometheus
// conventions: podtrain_ prefix, base units (seconds, bytes), counters end
// in _total, and labels stay bounded (no step numbers or example ids).
//
// Thread-safety: prometheus-cpp metrics are thread-safe; MetricsServer is
// immutable after Start.

#ifndef PODTRAIN_COMMON_METRICS_H_
#define PODTRAIN_COMMON_METRICS_H_

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

struct MHD_Daemon;  // libmicrohttpd

namespace podtrain {

// Serves `registry` at http://<address>/metrics until destroyed.
class MetricsServer {
 public:
  // `address` is host:port; port 0 lets the OS pick (see port()).
  // UNAVAILABLE naming the address if it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address,
      std::shared_ptr<prometheus::Registry> registry);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  const prometheus::Registry& registry() const { return *registry_; }

 private:
  MetricsServer() = default;
  ::MHD_Daemon* daemon_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  int port_ = 0;
};

// The registry in the Prometheus text exposition format.
std::string SerializeMetrics(const prometheus::Registry& registry);

// Durations from 100 us to ~100 s, a factor of ~2.5 apart: RPCs, steps,
// all-reduces and checkpoint writes all land in the middle of the range.
prometheus::Histogram::BucketBoundaries LatencyBuckets();

// Observes the time from construction to destruction into `histogram`.
class ScopedTimer {
 public:
  explicit ScopedTimer(prometheus::Histogram* histogram)
      : histogram_(histogram), start_(absl::Now()) {}
  ~ScopedTimer() {
    if (histogram_ != nullptr) {
      histogram_->Observe(absl::ToDoubleSeconds(absl::Now() - start_));
    }
  }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  prometheus::Histogram* const histogram_;
  const absl::Time start_;
};

}  // namespace podtrain

#endif  // PODTRAIN_COMMON_METRICS_H_
