// podtrain-worker: joins a coordinator and trains whatever job it is given.
//
//   podtrain-worker --coordinator=127.0.0.1:7070 --worker_id=w0
//
// SIGTERM (a preemption notice): the world checkpoints at the next step
// boundary, the coordinator commits it, and the worker exits 0 within its
// grace period. Exit codes: 0 when the job ended or after a preemption,
// 1 on an error no rejoin can fix.

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "worker/agent.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070", "coordinator address");
ABSL_FLAG(std::string, worker_id, "",
          "stable worker name (default: hostname-pid)");
ABSL_FLAG(std::string, hostname, "127.0.0.1",
          "address peers reach this worker's collectives on");
ABSL_FLAG(std::string, token_file, "",
          "file holding the coordinator's bearer token");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:0",
          "host:port for Prometheus /metrics (port 0: the OS picks; empty: "
          "off)");
ABSL_FLAG(std::string, metrics_port_file, "",
          "if set, the bound metrics port is written here");
ABSL_FLAG(int32_t, threads, 1, "libtorch intra-op threads");
ABSL_FLAG(int32_t, collective_timeout_seconds, 30,
          "a collective stuck this long fails (a stopped peer)");
ABSL_FLAG(int32_t, preemption_grace_seconds, 25,
          "after SIGTERM, wait at most this long for the emergency commit");

namespace {

podtrain::worker::Agent* agent = nullptr;

void OnSigterm(int) {
  if (agent != nullptr) agent->RequestPreemption();
}

std::string ReadToken(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream file(path);
  std::string token((std::istreambuf_iterator<char>(file)),
                    std::istreambuf_iterator<char>());
  return std::string(absl::StripAsciiWhitespace(token));
}

std::string DefaultWorkerId() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + "-" + std::to_string(getpid());
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "podtrain-worker --coordinator=HOST:PORT --worker_id=NAME");
  absl::ParseCommandLine(argc, argv);
  podtrain::InitLogging(argv[0]);

  podtrain::worker::AgentOptions options;
  options.coordinator_address = absl::GetFlag(FLAGS_coordinator);
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (options.worker_id.empty()) options.worker_id = DefaultWorkerId();
  options.hostname = absl::GetFlag(FLAGS_hostname);
  options.bearer_token = ReadToken(absl::GetFlag(FLAGS_token_file));
  options.torch_threads = absl::GetFlag(FLAGS_threads);
  options.collective_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_seconds));
  options.preemption_grace =
      absl::Seconds(absl::GetFlag(FLAGS_preemption_grace_seconds));
  options.metrics_registry = std::make_shared<prometheus::Registry>();

  std::unique_ptr<podtrain::MetricsServer> metrics;
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    auto started = podtrain::MetricsServer::Start(
        absl::GetFlag(FLAGS_metrics_address), options.metrics_registry);
    if (!started.ok()) {
      LOG(ERROR) << started.status();
      return 1;
    }
    metrics = *std::move(started);
    LOG(INFO) << "metrics on port " << metrics->port();
    const std::string port_file = absl::GetFlag(FLAGS_metrics_port_file);
    if (!port_file.empty()) {
      std::ofstream(port_file + ".tmp") << metrics->port() << "\n";
      std::rename((port_file + ".tmp").c_str(), port_file.c_str());
    }
  }

  podtrain::worker::Agent worker(options);
  agent = &worker;
  signal(SIGTERM, OnSigterm);
  const absl::Status status = worker.Run();
  agent = nullptr;
  if (!status.ok()) {
    LOG(ERROR) << options.worker_id << ": " << status;
    return 1;
  }
  return 0;
}
