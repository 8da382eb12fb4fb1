// podtrain-data: ingest, inspect and verify datasets; print the sampler's
// epoch order or what a rank trains on at a step. See cli/data_commands.h.

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/data_commands.h"
#include "common/logging.h"

ABSL_FLAG(std::string, out, "", "ingest/synth: output dataset directory");
ABSL_FLAG(std::string, source, "/usr/share/datasets/fashion-mnist",
          "ingest: directory of the IDX .gz files");
ABSL_FLAG(std::string, name, "synthetic", "synth: dataset name");
ABSL_FLAG(std::string, dataset, "",
          "sample: dataset directory (instead of --examples/--shards)");
ABSL_FLAG(int64_t, examples, -1, "synth/sample: number of examples N");
ABSL_FLAG(int64_t, shards, -1,
          "ingest: shards per split (default 8); synth/sample: shard count "
          "(sample default 1)");
ABSL_FLAG(int64_t, window, 0,
          "sample: shards per shuffle window (0 = global shuffle)");
ABSL_FLAG(uint64_t, seed, 0, "sample: the job's seed");
ABSL_FLAG(int64_t, epoch, 0, "sample: epoch to print");
ABSL_FLAG(int64_t, start, 0, "sample: first position within the epoch");
ABSL_FLAG(int64_t, count, -1, "sample: number of positions (default: rest)");
ABSL_FLAG(int64_t, batch, -1,
          "sample: global batch B; selects step mode (--step/--world/--rank)");
ABSL_FLAG(int64_t, step, 0, "sample: step T (step mode)");
ABSL_FLAG(int64_t, world, 1, "sample: world size W (step mode)");
ABSL_FLAG(int64_t, rank, 0, "sample: rank R (step mode)");

namespace {

constexpr char kUsage[] =
    "podtrain-data COMMAND [ARGS] [FLAGS]\n"
    "  ingest fashion-mnist --out DIR [--shards K] [--source DIR]\n"
    "  synth --out DIR --examples N --shards S [--name NAME]\n"
    "  inspect DIR\n"
    "  verify DIR\n"
    "  sample (--dataset DIR | --examples N [--shards S]) [--window W]\n"
    "         --seed X [--epoch E --start P --count C]\n"
    "         [--batch B --step T --world W --rank R]";

absl::Status Dispatch(const std::vector<char*>& args) {
  using namespace podtrain::cli;
  const std::string command = args.size() > 1 ? args[1] : "";
  const auto positional = [&](const char* what) -> absl::StatusOr<std::string> {
    if (args.size() != 3) {
      return absl::InvalidArgumentError(std::string(command) +
                                        " needs exactly one argument: " + what);
    }
    return std::string(args[2]);
  };
  if (command == "ingest") {
    IngestCommand ingest;
    if (args.size() != 3) {
      return absl::InvalidArgumentError(
          "ingest needs the dataset name: ingest fashion-mnist --out DIR");
    }
    ingest.dataset = args[2];
    ingest.out_dir = absl::GetFlag(FLAGS_out);
    ingest.source_dir = absl::GetFlag(FLAGS_source);
    const int64_t shards = absl::GetFlag(FLAGS_shards);
    if (shards != -1) ingest.num_shards = shards;
    return RunIngest(ingest, std::cout);
  }
  if (command == "synth") {
    SynthCommand synth;
    synth.out_dir = absl::GetFlag(FLAGS_out);
    synth.name = absl::GetFlag(FLAGS_name);
    synth.num_examples = absl::GetFlag(FLAGS_examples);
    synth.num_shards = absl::GetFlag(FLAGS_shards);
    return RunSynth(synth, std::cout);
  }
  if (command == "inspect" || command == "verify") {
    absl::StatusOr<std::string> dir = positional("a dataset directory");
    if (!dir.ok()) return dir.status();
    return command == "inspect" ? RunInspect(*dir, std::cout)
                                : RunVerify(*dir, std::cout);
  }
  if (command == "sample") {
    SampleCommand sample;
    sample.dataset_dir = absl::GetFlag(FLAGS_dataset);
    sample.num_examples = absl::GetFlag(FLAGS_examples);
    const int64_t shards = absl::GetFlag(FLAGS_shards);
    if (shards != -1) sample.num_shards = shards;
    sample.window_shards = absl::GetFlag(FLAGS_window);
    sample.seed = absl::GetFlag(FLAGS_seed);
    sample.epoch = absl::GetFlag(FLAGS_epoch);
    sample.start = absl::GetFlag(FLAGS_start);
    if (absl::GetFlag(FLAGS_count) != -1)
      sample.count = absl::GetFlag(FLAGS_count);
    if (absl::GetFlag(FLAGS_batch) != -1) {
      sample.global_batch = absl::GetFlag(FLAGS_batch);
    }
    sample.step = absl::GetFlag(FLAGS_step);
    sample.world = absl::GetFlag(FLAGS_world);
    sample.rank = absl::GetFlag(FLAGS_rank);
    return RunSample(sample, std::cout);
  }
  return absl::InvalidArgumentError(command.empty()
                                        ? "no command given"
                                        : "unknown command '" + command + "'");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  podtrain::InitLogging(argv[0]);
  std::ios::sync_with_stdio(false);
  const absl::Status status = Dispatch(args);
  std::cout.flush();
  if (!status.ok()) {
    std::cerr << "podtrain-data: " << status.message() << "\n";
    if (status.code() == absl::StatusCode::kInvalidArgument &&
        (args.size() < 2 ||
         status.message().find("command") != std::string::npos)) {
      std::cerr << "usage: " << kUsage << "\n";
    }
    return 1;
  }
  return 0;
}
