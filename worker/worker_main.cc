// podtrain-worker: joins a coordinator and trains whatever job it is given.
//
//   podtrain-worker --coordinator=127.0.0.1:7070 --worker_id=w0
//
// To a coordinator serving mutual TLS: --tls_ca=ca.crt --tls_cert=worker.crt
// --tls_key=worker.key.
//
// SIGTERM (a preemption notice): the world checkpoints at the next step
// boundary, the coordinator commits it, and the worker exits 0 within its
// grace period. Exit codes: 0 when the job ended or after a preemption,
// 1 on an error no rejoin can fix.
//
// When OpenBLAS picked kernels narrower than the CPU supports and
// OPENBLAS_CORETYPE is unset, the worker restarts itself once with it set
// (common/blas_env.h). glibc's malloc keeps freed memory instead of
// returning it to the kernel every step (see main()).

#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/blas_env.h"
#include "common/launch_files.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "services/tls.h"
#include "worker/agent.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070", "coordinator address");
ABSL_FLAG(std::string, worker_id, "",
          "stable worker name (default: hostname-pid)");
ABSL_FLAG(std::string, hostname, "127.0.0.1",
          "address peers reach this worker's collectives on");
ABSL_FLAG(std::string, token_file, "",
          "file holding the coordinator's bearer token");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate(s) the coordinator's certificate must chain to; "
          "any of --tls_*: talk to the coordinator over TLS");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate chain, for a coordinator that requires one");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:0",
          "host:port for Prometheus /metrics (port 0: the OS picks; empty: "
          "off)");
ABSL_FLAG(std::string, metrics_port_file, "",
          "if set, the bound metrics port is written here");
ABSL_FLAG(int32_t, threads, 1,
          "intra-op threads: libtorch's, and OpenBLAS's for its GEMMs");
ABSL_FLAG(std::string, device, "cpu",
          "cpu (Gloo collectives) or cuda[:N] (NCCL; needs a --config=cuda "
          "build and a CUDA libtorch)");
ABSL_FLAG(int32_t, collective_timeout_seconds, 30,
          "a collective stuck this long fails (a stopped peer)");
ABSL_FLAG(bool, shared_memory_allreduce, true,
          "CPU ranks on one host all-reduce through shared memory (/dev/shm) "
          "instead of loopback TCP; off: Gloo's TCP for everything");
ABSL_FLAG(int32_t, preemption_grace_seconds, 25,
          "after SIGTERM, wait at most this long for the emergency commit");

namespace {

// SIGTERM can arrive while the worker is still starting: remember it, and
// hand it to the agent once it exists (RequestPreemption is idempotent).
std::atomic<bool> sigterm_received{false};
std::atomic<podtrain::worker::Agent*> agent{nullptr};

void OnSigterm(int) {
  sigterm_received.store(true);
  podtrain::worker::Agent* current = agent.load();
  if (current != nullptr) current->RequestPreemption();
}

std::string DefaultWorkerId() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + "-" + std::to_string(getpid());
}

}  // namespace

int main(int argc, char** argv) {
  // First: it may exec this binary again with OpenBLAS's kernels chosen.
  podtrain::MaybeReexecForBlas(argv);
  // Keep freed tensor memory in the heap. With glibc's defaults every step's
  // multi-megabyte activations and gradients come from fresh mmap()s or a
  // regrown heap top, so each step page-faults them in again (with zeroing)
  // and unmaps them: ~8 % of a reference-MLP step's CPU in perf, ~10 % of
  // its time (bench/RESULTS.md, e2e). The price: up to 1 GB of freed memory
  // stays mapped by the worker.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  absl::SetProgramUsageMessage(
      "podtrain-worker --coordinator=HOST:PORT --worker_id=NAME");
  absl::ParseCommandLine(argc, argv);
  podtrain::InitLogging(argv[0]);
  // Right after glog (whose failure handler would otherwise own SIGTERM).
  signal(SIGTERM, OnSigterm);
  // As in the coordinator: Debian builds Abseil without NDEBUG, so every
  // absl::Mutex in the process (gRPC's, the input pipeline's, the gradient
  // buckets' several a step) would feed the lock-order graph (perf of a
  // world-2 reference run: GraphCycles among the worker's own symbols).
  // The tests keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  podtrain::worker::AgentOptions options;
  options.coordinator_address = absl::GetFlag(FLAGS_coordinator);
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (options.worker_id.empty()) options.worker_id = DefaultWorkerId();
  options.hostname = absl::GetFlag(FLAGS_hostname);
  options.bearer_token =
      podtrain::ReadTokenFile(absl::GetFlag(FLAGS_token_file));
  const podtrain::services::TlsOptions tls{
      .ca_file = absl::GetFlag(FLAGS_tls_ca),
      .cert_file = absl::GetFlag(FLAGS_tls_cert),
      .key_file = absl::GetFlag(FLAGS_tls_key)};
  if (podtrain::services::TlsRequested(tls)) {
    auto credentials = podtrain::services::MakeChannelCredentials(tls);
    if (!credentials.ok()) {
      LOG(ERROR) << "TLS: " << credentials.status();
      return 1;
    }
    options.channel_credentials = *std::move(credentials);
  }
  options.torch_threads = absl::GetFlag(FLAGS_threads);
  options.device = absl::GetFlag(FLAGS_device);
  podtrain::SetBlasThreads(options.torch_threads);
  options.collective_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_seconds));
  options.shared_memory_allreduce =
      absl::GetFlag(FLAGS_shared_memory_allreduce);
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
    podtrain::WritePortFile(absl::GetFlag(FLAGS_metrics_port_file),
                            metrics->port());
  }

  podtrain::worker::Agent worker(options);
  agent.store(&worker);
  if (sigterm_received.load()) worker.RequestPreemption();
  const absl::Status status = worker.Run();
  agent.store(nullptr);
  if (!status.ok()) {
    LOG(ERROR) << options.worker_id << ": " << status;
    return 1;
  }
  return 0;
}
