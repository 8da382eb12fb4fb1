// The subcommands of `podtrain`, the job client of podtrain-coordinator's
// JobService (proto/job.proto documents every RPC and field):
//
//   submit SPEC_FILE [--request_id ID]   CreateJob from a JobSpec file
//   get JOB                              GetJob
//   list [--page_size N] [--all]         ListJobs, newest first
//   cancel JOB                           CancelJob
//   watch JOB                            WatchJob until the job ends
//
// JOB is `jobs/000001`, `000001` or `1` (NormalizeJobName). A spec file is a
// podtrain.v1.JobSpec as text proto (.textproto, .txtpb, .pbtxt), protobuf
// JSON (.json) or YAML (.yml, .yaml; the YAML tree is converted to protobuf
// JSON field by field, so its errors name the line and the field).
//
// Each command takes an options struct, the ClientOptions (the global
// flags), a JobService stub and the stream it prints to, so tests run them
// against an in-process server; flags live in podtrain_main.cc only. The
// stub's channel should come from services::MakeCoordinatorChannel, whose
// fast reconnects give the retries below a coordinator to reach once it is
// back, and whose keepalive ends a watch whose coordinator vanished. Every
// call carries a deadline and, if configured, "authorization: Bearer
// <token>". Idempotent calls (GetJob, ListJobs, and CreateJob, which is
// idempotent by request_id) are retried on UNAVAILABLE with backoff; CancelJob
// is not, since a retry after a lost reply would report FAILED_PRECONDITION
// for a cancel that worked.
//
// Output: text for people, or with OutputFormat::kJson one JSON object per
// line (protobuf's JSON mapping of Job, or of JobEvent for watch).
//
// Thread-safety: functions without shared state; a stub may be shared across
// threads, an ostream may not.

#ifndef PODTRAIN_CLI_JOB_COMMANDS_H_
#define PODTRAIN_CLI_JOB_COMMANDS_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/job.grpc.pb.h"
#include "proto/job.pb.h"

namespace podtrain::cli {

enum class OutputFormat { kText, kJson };

// The global flags: where the coordinator is, how to call it, how to print.
struct ClientOptions {
  // host:port of the coordinator the stub's channel goes to; errors name it.
  std::string coordinator = "127.0.0.1:7070";
  // If not empty, every call carries "authorization: Bearer <token>".
  std::string bearer_token;
  // TLS credentials the stub's channel was made with (services/tls.h);
  // null: plaintext. Errors from a failed handshake mention them.
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials;
  OutputFormat output = OutputFormat::kText;
  // Deadline of one unary command, retries and backoff included.
  absl::Duration timeout = absl::Seconds(30);
  // Deadline of a watch stream (jobs can train for days; the stream still
  // needs a deadline so a wedged one cannot hang forever).
  absl::Duration watch_timeout = absl::Hours(7 * 24);
  // UNAVAILABLE is retried this many times, after initial_backoff, doubling,
  // with +-20% jitter (so clients that failed together do not retry
  // together).
  int max_retries = 3;
  absl::Duration initial_backoff = absl::Milliseconds(200);
};

// The token in file `path`, surrounding whitespace stripped. NOT_FOUND (or
// the OS's reason) naming the file if it cannot be read; INVALID_ARGUMENT if
// it is empty.
absl::StatusOr<std::string> ReadBearerToken(const std::string& path);

// "jobs/000001", "000001" and "1" -> "jobs/000001" (the coordinator's
// `jobs/%06d`). INVALID_ARGUMENT for anything else, or an id below 1.
absl::StatusOr<std::string> NormalizeJobName(absl::string_view job);

// A random RFC 4122 version-4 UUID, e.g.
// "3f2b8c1e-9a4d-4e6f-b0c1-2d3e4f5a6b7c". submit makes one per invocation
// and sends it with every retry, so a retried CreateJob cannot create twice.
std::string NewRequestId();

// Reads a JobSpec from `path`, in the format its extension names (see
// above). Errors are INVALID_ARGUMENT and start with the path, plus
// ":line:column" where the parser knows it, e.g.
//   "job.yaml:4:12: spec.model.hidden[1]: expected an integer, got 'wide'"
// An unreadable file is NOT_FOUND / PERMISSION_DENIED naming it.
absl::StatusOr<v1::JobSpec> ReadJobSpecFile(const std::string& path);

// The YAML part of ReadJobSpecFile, on text already read; `filename` only
// labels errors. Keys are proto field names (global_batch) or their JSON
// names (globalBatch); scalars are read as the field's type wants; enums by
// name; an empty value (`key:`, `~`, `null`) leaves the field unset.
absl::StatusOr<v1::JobSpec> ParseYamlJobSpec(absl::string_view yaml,
                                             const std::string& filename);

// --- Commands -------------------------------------------------------------

struct SubmitCommand {
  std::string spec_file;
  // Empty: NewRequestId().
  std::string request_id;
};
// Prints the job CreateJob returns (a replayed request_id returns the job
// the first call made).
absl::Status RunSubmit(const SubmitCommand& command,
                       const ClientOptions& client,
                       v1::JobService::StubInterface* stub, std::ostream& out);

struct JobCommand {
  // Any form NormalizeJobName accepts.
  std::string job;
};
absl::Status RunGet(const JobCommand& command, const ClientOptions& client,
                    v1::JobService::StubInterface* stub, std::ostream& out);
// Prints the job as CancelJob left it.
absl::Status RunCancel(const JobCommand& command, const ClientOptions& client,
                       v1::JobService::StubInterface* stub, std::ostream& out);

struct ListCommand {
  // Jobs per ListJobs call; 0: the server's default.
  int32_t page_size = 0;
  // Follow next_page_token to the last page; otherwise print the first page
  // (in text, with a note when there are more).
  bool all = false;
};
absl::Status RunList(const ListCommand& command, const ClientOptions& client,
                     v1::JobService::StubInterface* stub, std::ostream& out);

struct WatchCommand {
  std::string job;
  // Text output on a terminal: step lines overwrite each other ("\r") so the
  // progress stays on one live line; other events get lines of their own.
  bool live = false;
};
// Prints every event of the job until it ends and returns the job as it
// ended (SUCCEEDED, FAILED or CANCELLED). A stream that breaks or ends early
// is an error (its code, with a message that says the watch broke).
absl::StatusOr<v1::Job> RunWatch(const WatchCommand& command,
                                 const ClientOptions& client,
                                 v1::JobService::StubInterface* stub,
                                 std::ostream& out);

// What `watch` exits with for a job that ended: 0 if it SUCCEEDED, else 1.
int WatchExitCode(const v1::Job& job);

// "jobs/000001 ended CANCELLED: cancelled by request".
std::string DescribeEnd(const v1::Job& job);

// --- Building blocks, exposed for tests ----------------------------------

// What a step-progress line needs beyond the event: the job's total steps
// and examples per epoch, when known (the latter comes from the dataset's
// MANIFEST, when the client can read it).
struct ProgressContext {
  std::optional<int64_t> total_steps;
  std::optional<int64_t> examples_per_epoch;
};

// One text line for `event` (no newline), e.g.
//   "step 120/1000  epoch 1.20  4512 ex/s  loss 0.4312  world 4  gen 3"
std::string FormatEvent(const v1::JobEvent& event,
                        const ProgressContext& context);

// Runs one unary RPC under the client's policy: each attempt gets a fresh
// context with the deadline (now + client.timeout, shared by all attempts)
// and the token; UNAVAILABLE is retried as ClientOptions says if
// `idempotent`. Errors keep their code; UNAVAILABLE and DEADLINE_EXCEEDED
// name the coordinator's address, UNAUTHENTICATED says how to pass a token.
absl::Status CallCoordinator(
    const ClientOptions& client, bool idempotent,
    const std::function<grpc::Status(grpc::ClientContext*)>& attempt);

}  // namespace podtrain::cli

#endif  // PODTRAIN_CLI_JOB_COMMANDS_H_
