// podtrain: submit, inspect, cancel and follow training jobs on a
// podtrain-coordinator. See cli/job_commands.h for the commands.
//
//   podtrain submit job.yaml
//   podtrain watch 1
//   podtrain --coordinator 10.0.0.5:7070 --output json list --all
//
// Exit status: 0 success; 1 a failed command ("podtrain: CODE: message" on
// stderr) or a watched job that ended FAILED or CANCELLED; 2 a usage error
// (with the usage text).
//
// The flags are parsed here rather than by absl::ParseCommandLine, which
// exits 1 on an unknown flag or a bad value: scripts must be able to tell a
// mistyped command (2) from a coordinator's refusal (1).

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "cli/job_commands.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "proto/job.grpc.pb.h"
#include "services/channel.h"
#include "services/tls.h"

namespace {

using podtrain::cli::ClientOptions;
using podtrain::cli::OutputFormat;

constexpr char kUsage[] =
    "usage: podtrain [FLAGS] COMMAND [ARGS] [FLAGS]\n"
    "\n"
    "commands:\n"
    "  submit SPEC_FILE [--request_id ID]  create a job from a JobSpec file\n"
    "                                      (.textproto .txtpb .pbtxt, .json,\n"
    "                                      .yaml .yml)\n"
    "  get JOB                             show a job\n"
    "  list [--page_size N] [--all]        list jobs, newest first\n"
    "  cancel JOB                          cancel a job\n"
    "  watch JOB [--watch_timeout_seconds N]\n"
    "                                      follow a job until it ends: exit 0\n"
    "                                      if it SUCCEEDED, 1 otherwise\n"
    "  JOB is jobs/000001, 000001 or 1.\n"
    "\n"
    "flags of every command (--flag=value or --flag value):\n"
    "  --coordinator HOST:PORT  default $PODTRAIN_COORDINATOR, else "
    "127.0.0.1:7070\n"
    "  --token_file PATH        file holding the bearer token, default\n"
    "                           $PODTRAIN_TOKEN_FILE\n"
    "  --tls_ca PATH            PEM CA the coordinator's certificate must\n"
    "                           chain to; any --tls_* flag: use TLS\n"
    "  --tls_cert PATH          PEM client certificate (mutual TLS)\n"
    "  --tls_key PATH           PEM private key of --tls_cert\n"
    "  --output text|json       json: one JSON object per line\n"
    "  --timeout_seconds N      deadline of each call, retries included "
    "(30)\n"
    "\n"
    "exit status: 0 ok, 1 error, 2 usage error\n";

constexpr char kDefaultCoordinator[] = "127.0.0.1:7070";

// Every flag, and the command it belongs to ("" = every command).
const std::map<std::string, std::string>& FlagOwners() {
  static const auto* owners = new std::map<std::string, std::string>{
      {"coordinator", ""},
      {"token_file", ""},
      // Any of the three turns TLS on.
      {"tls_ca", ""},
      {"tls_cert", ""},
      {"tls_key", ""},
      {"output", ""},
      {"timeout_seconds", ""},
      {"help", ""},
      {"request_id", "submit"},
      {"page_size", "list"},
      {"all", "list"},
      {"watch_timeout_seconds", "watch"},
  };
  return *owners;
}

bool IsBoolFlag(const std::string& name) {
  return name == "all" || name == "help";
}

// The command line split into positional words and raw flag values; flags
// may come before or after the command.
struct CommandLine {
  std::vector<std::string> words;
  std::map<std::string, std::string> flags;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback) const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
};

absl::StatusOr<CommandLine> SplitCommandLine(int argc, char** argv) {
  CommandLine line;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {  // everything after is positional
      for (++i; i < argc; ++i) line.words.emplace_back(argv[i]);
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      line.words.emplace_back(arg);
      continue;
    }
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t equals = arg.find('=');
    std::string name(arg.substr(0, equals));
    if (name == "h") name = "help";
    if (FlagOwners().count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (equals != absl::string_view::npos) {
      line.flags[name] = std::string(arg.substr(equals + 1));
    } else if (IsBoolFlag(name)) {
      line.flags[name] = "true";
    } else if (i + 1 < argc) {
      line.flags[name] = argv[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " needs a value"));
    }
  }
  return line;
}

absl::StatusOr<int64_t> IntFlag(const CommandLine& line,
                                const std::string& name, int64_t fallback,
                                int64_t min) {
  if (!line.Has(name)) return fallback;
  const std::string text = line.Get(name, "");
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < min) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, ": expected an integer >= ", min, ", got '", text, "'"));
  }
  return value;
}

absl::StatusOr<bool> BoolFlag(const CommandLine& line,
                              const std::string& name) {
  bool value = false;
  const std::string text = line.Get(name, "false");
  if (!absl::SimpleAtob(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": expected true or false, got '", text, "'"));
  }
  return value;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// What to run, parsed and checked.
struct Invocation {
  std::string command;
  // The command's one positional argument (SPEC_FILE or JOB), if it takes
  // one.
  std::string argument;
  ClientOptions client;
  std::string token_file;
  podtrain::services::TlsOptions tls;
  std::string request_id;
  int32_t page_size = 0;
  bool all = false;
};

absl::Status ParseGlobalFlags(const CommandLine& line, Invocation* run) {
  run->client.coordinator = line.Get(
      "coordinator", EnvOr("PODTRAIN_COORDINATOR", kDefaultCoordinator));
  if (run->client.coordinator.empty()) {
    return absl::InvalidArgumentError("--coordinator: must not be empty");
  }
  run->token_file = line.Get("token_file", EnvOr("PODTRAIN_TOKEN_FILE", ""));
  run->tls.ca_file = line.Get("tls_ca", "");
  run->tls.cert_file = line.Get("tls_cert", "");
  run->tls.key_file = line.Get("tls_key", "");
  const std::string output = line.Get("output", "text");
  if (output != "text" && output != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("--output: expected text or json, got '", output, "'"));
  }
  run->client.output =
      output == "json" ? OutputFormat::kJson : OutputFormat::kText;
  ASSIGN_OR_RETURN(const int64_t timeout,
                   IntFlag(line, "timeout_seconds", 30, 1));
  run->client.timeout = absl::Seconds(timeout);
  return absl::OkStatus();
}

// The positional arguments: the command and its one argument, if any.
absl::Status ParseCommand(const CommandLine& line, Invocation* run) {
  if (line.words.empty()) return absl::InvalidArgumentError("no command");
  run->command = line.words[0];
  const size_t arguments = line.words.size() - 1;
  if (run->command == "list") {
    if (arguments != 0) {
      return absl::InvalidArgumentError("list takes no arguments");
    }
    return absl::OkStatus();
  }
  const char* what = run->command == "submit" ? "SPEC_FILE" : "JOB";
  if (run->command != "submit" && run->command != "get" &&
      run->command != "cancel" && run->command != "watch") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown command '", run->command, "'"));
  }
  if (arguments != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(run->command, " takes one argument: ", what));
  }
  run->argument = line.words[1];
  if (run->command != "submit") {
    RETURN_IF_ERROR(podtrain::cli::NormalizeJobName(run->argument).status());
  }
  return absl::OkStatus();
}

absl::Status ParseCommandFlags(const CommandLine& line, Invocation* run) {
  for (const auto& [name, value] : line.flags) {
    const std::string& owner = FlagOwners().at(name);
    if (!owner.empty() && owner != run->command) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", name, " is a flag of ", owner, ", not of ", run->command));
    }
  }
  run->request_id = line.Get("request_id", "");
  ASSIGN_OR_RETURN(const int64_t page_size, IntFlag(line, "page_size", 0, 0));
  if (page_size > INT32_MAX) {
    return absl::InvalidArgumentError("--page_size: too large");
  }
  run->page_size = static_cast<int32_t>(page_size);
  ASSIGN_OR_RETURN(run->all, BoolFlag(line, "all"));
  ASSIGN_OR_RETURN(const int64_t watch_timeout,
                   IntFlag(line, "watch_timeout_seconds",
                           absl::ToInt64Seconds(run->client.watch_timeout), 1));
  run->client.watch_timeout = absl::Seconds(watch_timeout);
  return absl::OkStatus();
}

absl::StatusOr<Invocation> ParseInvocation(const CommandLine& line) {
  Invocation run;
  RETURN_IF_ERROR(ParseGlobalFlags(line, &run));
  RETURN_IF_ERROR(ParseCommand(line, &run));
  RETURN_IF_ERROR(ParseCommandFlags(line, &run));
  return run;
}

int Fail(const absl::Status& status) {
  std::cout.flush();
  std::cerr << "podtrain: " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << "\n";
  return 1;
}

// Runs a parsed invocation; returns the exit status.
int Run(const Invocation& run) {
  using namespace podtrain::cli;
  ClientOptions client = run.client;
  if (!run.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadBearerToken(run.token_file);
    if (!token.ok()) return Fail(token.status());
    client.bearer_token = *std::move(token);
  }
  if (podtrain::services::TlsRequested(run.tls)) {
    auto credentials = podtrain::services::MakeChannelCredentials(run.tls);
    if (!credentials.ok()) return Fail(credentials.status());
    client.channel_credentials = *std::move(credentials);
  }
  const auto stub = podtrain::v1::JobService::NewStub(
      podtrain::services::MakeCoordinatorChannel(client.coordinator,
                                                 client.channel_credentials));
  absl::Status status;
  if (run.command == "submit") {
    status =
        RunSubmit({.spec_file = run.argument, .request_id = run.request_id},
                  client, stub.get(), std::cout);
  } else if (run.command == "get") {
    status = RunGet({.job = run.argument}, client, stub.get(), std::cout);
  } else if (run.command == "cancel") {
    status = RunCancel({.job = run.argument}, client, stub.get(), std::cout);
  } else if (run.command == "list") {
    status = RunList({.page_size = run.page_size, .all = run.all}, client,
                     stub.get(), std::cout);
  } else {  // watch; ParseCommand admits nothing else
    const bool live =
        client.output == OutputFormat::kText && isatty(STDOUT_FILENO) == 1;
    absl::StatusOr<podtrain::v1::Job> job = RunWatch(
        {.job = run.argument, .live = live}, client, stub.get(), std::cout);
    if (!job.ok()) return Fail(job.status());
    std::cout.flush();
    // In text the end is the watch's last line; JSON keeps stdout to events.
    if (WatchExitCode(*job) != 0 && client.output == OutputFormat::kJson) {
      std::cerr << "podtrain: " << DescribeEnd(*job) << "\n";
    }
    return WatchExitCode(*job);
  }
  if (!status.ok()) return Fail(status);
  std::cout.flush();
  return 0;
}

int UsageError(const absl::Status& status) {
  std::cerr << "podtrain: " << status.message() << "\n\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  podtrain::InitLogging(argv[0]);
  std::ios::sync_with_stdio(false);
  absl::StatusOr<CommandLine> line = SplitCommandLine(argc, argv);
  if (!line.ok()) return UsageError(line.status());
  absl::StatusOr<bool> help = BoolFlag(*line, "help");
  if (!help.ok()) return UsageError(help.status());
  if (*help) {
    std::cout << kUsage;
    return 0;
  }
  absl::StatusOr<Invocation> run = ParseInvocation(*line);
  if (!run.ok()) return UsageError(run.status());
  return Run(*run);
}
