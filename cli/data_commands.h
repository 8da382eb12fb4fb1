// The subcommands of `podtrain-data`, the dataset and sampler tool:
//
//   ingest fashion-mnist --out DIR [--shards K]   IDX files -> record shards
//   synth --out DIR --examples N --shards S       a synthetic (JFT-scale)
//   manifest inspect DIR                                   counts, schema,
//   fingerprint verify DIR                                    every checksum,
//   every shard sample ...                                    the ids of an
//   epoch, or of one
//                                                 rank at one step
//
// Each takes an options struct and writes its report to an ostream, so tests
// run them in-process; flags live in podtrain_data_main.cc only.
//
// Thread-safety: functions without shared state; one call per stream.

#ifndef PODTRAIN_CLI_DATA_COMMANDS_H_
#define PODTRAIN_CLI_DATA_COMMANDS_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace podtrain::cli {

struct IngestCommand {
  std::string dataset;  // only "fashion-mnist" today
  std::string source_dir = "/usr/share/datasets/fashion-mnist";
  std::string out_dir;
  int64_t num_shards = 8;
};
absl::Status RunIngest(const IngestCommand& command, std::ostream& out);

struct SynthCommand {
  std::string out_dir;
  std::string name = "synthetic";
  int64_t num_examples = 0;
  int64_t num_shards = 0;
};
absl::Status RunSynth(const SynthCommand& command, std::ostream& out);

absl::Status RunInspect(const std::string& dir, std::ostream& out);
absl::Status RunVerify(const std::string& dir, std::ostream& out);

// Which ids `sample` prints. The dataset's shape comes from a dataset
// directory, or from --examples/--shards (equal shards, as `synth` makes).
struct SampleCommand {
  std::string dataset_dir;
  int64_t num_examples = -1;
  int64_t num_shards = 1;
  int64_t window_shards = 0;  // 0: global shuffle
  uint64_t seed = 0;
  // Epoch mode: positions [start, start + count) of epoch `epoch` (all of
  // it by default).
  int64_t epoch = 0;
  int64_t start = 0;
  std::optional<int64_t> count;
  // Step mode, when global_batch is set: what `rank` of `world` trains on at
  // `step`.
  std::optional<int64_t> global_batch;
  int64_t step = 0;
  int64_t world = 1;
  int64_t rank = 0;
};
// Prints one example id per line.
absl::Status RunSample(const SampleCommand& command, std::ostream& out);

}  // namespace podtrain::cli

#endif  // PODTRAIN_CLI_DATA_COMMANDS_H_
