// podtrain-coordinator: serves the job API and the worker API on one port.
//
//   podtrain-coordinator --address=127.0.0.1:7070
//   --journal=/var/lib/podtrain/journal.db
//
// With mutual TLS, and a plaintext health-only port for Kubernetes probes:
//
//   podtrain-coordinator --address=0.0.0.0:7070 --tls_ca=ca.crt
//   --tls_cert=coordinator.crt --tls_key=coordinator.key
//   --health_address=0.0.0.0:8081
//
// SIGTERM or SIGINT: report NOT_SERVING, finish in-flight calls, exit 0. The
// journal holds everything durable; a restarted coordinator recovers it and
// the workers of running jobs carry on.

#include <signal.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/launch_files.h"
#include "common/logging.h"
#include "services/coordinator_server.h"
#include "services/tls.h"

ABSL_FLAG(std::string, address, "127.0.0.1:7070",
          "host:port to serve on (port 0: the OS picks; see --port_file)");
ABSL_FLAG(std::string, journal, "podtrain-journal.db",
          "SQLite journal of durable state (created if missing)");
ABSL_FLAG(std::string, port_file, "",
          "if set, the bound port is written here once serving");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:0",
          "host:port serving Prometheus /metrics (port 0: the OS picks; "
          "empty: off)");
ABSL_FLAG(std::string, metrics_port_file, "",
          "if set, the bound metrics port is written here once serving");
ABSL_FLAG(std::string, auth_token_file, "",
          "if set, a file holding the bearer token every call must carry");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate(s) that client certificates must chain to");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM server certificate chain; with --tls_key, the port serves TLS "
          "(none of --tls_*: plaintext)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(bool, tls_require_client_cert, true,
          "with TLS, refuse clients without a certificate signed by --tls_ca "
          "(mutual TLS); false: server-only TLS, --tls_ca unused");
ABSL_FLAG(std::string, health_address, "",
          "if set, host:port of a plaintext port serving only "
          "grpc.health.v1.Health, for probes that cannot do TLS (port 0: the "
          "OS picks; see --health_port_file)");
ABSL_FLAG(std::string, health_port_file, "",
          "if set, the bound health port is written here once serving");
ABSL_FLAG(int64_t, heartbeat_ms, 300, "worker heartbeat interval");
ABSL_FLAG(int64_t, lease_ms, 3000, "a worker silent this long is gone");
ABSL_FLAG(int64_t, recovery_lease_ms, 10000,
          "after a restart, a running world's members get at least this long "
          "to heartbeat again before they count as gone");
ABSL_FLAG(double, max_heartbeats_per_second, 2000,
          "bound on the pool's aggregate heartbeat rate: larger pools are "
          "handed a longer interval and a lease longer by as much (0: none)");
// 300 ms, after the restart backoff: long enough for live survivors (they
// learn of the new generation within a heartbeat) and not a second longer
// for a dead member whose lease has not run out yet (bench_recovery.sh).
ABSL_FLAG(int64_t, last_call_ms, 300,
          "rendezvous: wait this long for stragglers once min_workers joined");
ABSL_FLAG(int64_t, restart_backoff_ms, 500, "first restart backoff");
ABSL_FLAG(int64_t, restart_backoff_max_ms, 30000,
          "restart backoff doubles per restart up to this");
ABSL_FLAG(int64_t, lookahead_steps, 16,
          "assignment look-ahead, in steps (at least m + k + 4 in worlds that "
          "report every k steps and get m steps a message)");
ABSL_FLAG(int32_t, max_reports_per_step, 128,
          "a world of W ranks reports every k = ceil(W / this) steps, "
          "staggered; 0: every step");
ABSL_FLAG(int32_t, max_assignment_messages_per_step, 64,
          "a world of W ranks gets its assignments max(k, ceil(W / this)) "
          "steps a stream message, staggered; 0: k steps a message");
ABSL_FLAG(int32_t, max_pool_workers, 0,
          "workers the pool can ever hold (0: unknown); larger gangs are "
          "refused");

namespace {

absl::Notification* shutdown_requested = nullptr;

void OnSignal(int) {
  // Async-signal-safe enough: Notify only sets an atomic and wakes waiters.
  if (shutdown_requested != nullptr) shutdown_requested->Notify();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "podtrain-coordinator --address=HOST:PORT --journal=PATH");
  absl::ParseCommandLine(argc, argv);
  podtrain::InitLogging(argv[0]);
  // Debian builds Abseil without NDEBUG, which turns on absl::Mutex's
  // lock-order graph for every lock in the process (gRPC's included): ~7 %
  // of the coordinator's CPU under thousands of workers
  // (bench/bench_coordinator.sh). The tests keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  podtrain::services::CoordinatorServerOptions options;
  options.address = absl::GetFlag(FLAGS_address);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.bearer_token =
      podtrain::ReadTokenFile(absl::GetFlag(FLAGS_auth_token_file));
  if (!absl::GetFlag(FLAGS_auth_token_file).empty() &&
      options.bearer_token.empty()) {
    LOG(ERROR) << "--auth_token_file " << absl::GetFlag(FLAGS_auth_token_file)
               << " is missing or empty";
    return 1;
  }
  const podtrain::services::TlsOptions tls{
      .ca_file = absl::GetFlag(FLAGS_tls_ca),
      .cert_file = absl::GetFlag(FLAGS_tls_cert),
      .key_file = absl::GetFlag(FLAGS_tls_key),
      .require_client_cert = absl::GetFlag(FLAGS_tls_require_client_cert)};
  if (podtrain::services::TlsRequested(tls)) options.tls = tls;
  options.plaintext_health_address = absl::GetFlag(FLAGS_health_address);
  auto& coordinator = options.coordinator;
  coordinator.journal_path = absl::GetFlag(FLAGS_journal);
  coordinator.heartbeat_interval =
      absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_ms));
  coordinator.lease = absl::Milliseconds(absl::GetFlag(FLAGS_lease_ms));
  coordinator.recovery_lease =
      absl::Milliseconds(absl::GetFlag(FLAGS_recovery_lease_ms));
  coordinator.max_heartbeats_per_second =
      absl::GetFlag(FLAGS_max_heartbeats_per_second);
  coordinator.last_call = absl::Milliseconds(absl::GetFlag(FLAGS_last_call_ms));
  coordinator.restart_backoff_base =
      absl::Milliseconds(absl::GetFlag(FLAGS_restart_backoff_ms));
  coordinator.restart_backoff_max =
      absl::Milliseconds(absl::GetFlag(FLAGS_restart_backoff_max_ms));
  coordinator.assignment_lookahead_steps = absl::GetFlag(FLAGS_lookahead_steps);
  coordinator.max_reports_per_step = absl::GetFlag(FLAGS_max_reports_per_step);
  coordinator.max_assignment_messages_per_step =
      absl::GetFlag(FLAGS_max_assignment_messages_per_step);
  coordinator.max_pool_workers = absl::GetFlag(FLAGS_max_pool_workers);

  absl::Notification shutdown;
  shutdown_requested = &shutdown;
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);

  auto server = podtrain::services::CoordinatorServer::Start(
      options, podtrain::RealClock());
  if (!server.ok()) {
    LOG(ERROR) << "cannot start: " << server.status();
    return 1;
  }
  podtrain::WritePortFile(absl::GetFlag(FLAGS_metrics_port_file),
                          (*server)->metrics_port());
  podtrain::WritePortFile(absl::GetFlag(FLAGS_health_port_file),
                          (*server)->health_port());
  // Last: a port file's appearance tells a launcher everything is up.
  podtrain::WritePortFile(absl::GetFlag(FLAGS_port_file), (*server)->port());
  shutdown.WaitForNotification();
  LOG(INFO) << "shutting down";
  (*server)->Shutdown();
  return 0;
}
