#include "cli/data_commands.h"

#include <algorithm>
#include <charconv>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "dataset/dataset.h"
#include "dataset/fashion_mnist.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"

namespace podtrain::cli {
namespace {

// Fashion-MNIST's shape: the schema of every synthetic dataset `synth` makes,
// so the same models train on both.
dataset::Schema ImageSchema() {
  dataset::Schema schema;
  schema.height = 28;
  schema.width = 28;
  schema.channels = 1;
  schema.num_classes = 10;
  return schema;
}

void PrintManifest(const dataset::Manifest& manifest, std::ostream& out) {
  int64_t smallest = INT64_MAX, largest = 0, bytes = 0;
  for (const auto& shard : manifest.shards) {
    smallest = std::min(smallest, shard.records);
    largest = std::max(largest, shard.records);
    bytes += shard.bytes;
  }
  out << "name:         " << manifest.name << "\n"
      << "kind:         "
      << (manifest.synthetic ? "synthetic" : "record shards") << "\n"
      << "examples:     " << manifest.num_examples() << "\n"
      << "shards:       " << manifest.shards.size() << " (records per shard "
      << smallest << ".." << largest << ")\n"
      << "schema:       " << manifest.schema.height << "x"
      << manifest.schema.width << "x" << manifest.schema.channels << " uint8, "
      << manifest.schema.num_classes << " classes\n"
      << "bytes:        " << bytes << "\n"
      << "fingerprint:  " << dataset::FingerprintHex(manifest.Fingerprint())
      << "\n";
}

// Shard sizes for `sample`: from a dataset's manifest, or equal shards.
absl::StatusOr<std::vector<int64_t>> SampleShardSizes(
    const SampleCommand& command) {
  if (!command.dataset_dir.empty()) {
    ASSIGN_OR_RETURN(const dataset::Manifest manifest,
                     dataset::ReadManifest(command.dataset_dir));
    return manifest.ShardSizes();
  }
  if (command.num_examples < 0) {
    return absl::InvalidArgumentError(
        "sample needs --dataset DIR or --examples N");
  }
  if (command.num_examples == 0) {
    return absl::InvalidArgumentError(
        "--examples: must be >= 1 (an empty dataset has no epoch order)");
  }
  if (command.num_shards < 1 || command.num_shards > command.num_examples) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shards: must be in [1, examples=", command.num_examples,
                     "], got ", command.num_shards));
  }
  RETURN_IF_ERROR(dataset::ValidateSyntheticSpec(
      "sample", command.num_examples, command.num_shards, ImageSchema()));
  return dataset::MakeSyntheticManifest("sample", command.num_examples,
                                        command.num_shards, ImageSchema())
      .ShardSizes();
}

// Writes ids one per line through a large buffer: an epoch can be billions.
class IdPrinter {
 public:
  explicit IdPrinter(std::ostream& out) : out_(out) {}
  ~IdPrinter() { Flush(); }

  void Print(int64_t id) {
    if (buffer_.size() - used_ < 24) Flush();
    char* end = std::to_chars(buffer_.data() + used_,
                              buffer_.data() + buffer_.size(), id)
                    .ptr;
    *end++ = '\n';
    used_ = end - buffer_.data();
  }

  void Flush() {
    out_.write(buffer_.data(), used_);
    used_ = 0;
  }

 private:
  std::ostream& out_;
  std::vector<char> buffer_ = std::vector<char>(1 << 16);
  size_t used_ = 0;
};

absl::Status PrintPositions(const sampler::StreamSampler& sampler,
                            int64_t begin, int64_t count, std::ostream& out) {
  IdPrinter printer(out);
  constexpr int64_t kChunk = 1 << 16;
  std::vector<int64_t> ids;
  for (int64_t done = 0; done < count; done += kChunk) {
    ids.clear();
    RETURN_IF_ERROR(
        sampler.Fill(begin + done, std::min(kChunk, count - done), &ids));
    for (int64_t id : ids) printer.Print(id);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunIngest(const IngestCommand& command, std::ostream& out) {
  if (command.dataset != "fashion-mnist") {
    return absl::InvalidArgumentError(absl::StrCat("ingest: unknown dataset '",
                                                   command.dataset,
                                                   "' (known: fashion-mnist)"));
  }
  if (command.out_dir.empty()) {
    return absl::InvalidArgumentError("ingest: --out DIR is required");
  }
  if (command.num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shards: must be >= 1, got ", command.num_shards));
  }
  dataset::IngestOptions options;
  options.source_dir = command.source_dir;
  options.out_dir = command.out_dir;
  options.num_shards = static_cast<int32_t>(command.num_shards);
  ASSIGN_OR_RETURN(const auto manifests, dataset::IngestFashionMnist(options));
  out << "wrote " << command.out_dir << "/train\n";
  PrintManifest(manifests.first, out);
  out << "wrote " << command.out_dir << "/test\n";
  PrintManifest(manifests.second, out);
  return absl::OkStatus();
}

absl::Status RunSynth(const SynthCommand& command, std::ostream& out) {
  if (command.out_dir.empty()) {
    return absl::InvalidArgumentError("synth: --out DIR is required");
  }
  if (command.num_examples < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--examples: must be >= 1, got ", command.num_examples));
  }
  if (command.num_shards < 1 || command.num_shards > command.num_examples) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shards: must be in [1, examples=", command.num_examples,
                     "], got ", command.num_shards));
  }
  RETURN_IF_ERROR(dataset::ValidateSyntheticSpec(
      command.name, command.num_examples, command.num_shards, ImageSchema()));
  const dataset::Manifest manifest = dataset::MakeSyntheticManifest(
      command.name, command.num_examples, command.num_shards, ImageSchema());
  RETURN_IF_ERROR(dataset::CreateDirectories(command.out_dir));
  RETURN_IF_ERROR(dataset::WriteManifest(command.out_dir, manifest));
  out << "wrote " << command.out_dir << "\n";
  PrintManifest(manifest, out);
  return absl::OkStatus();
}

absl::Status RunInspect(const std::string& dir, std::ostream& out) {
  ASSIGN_OR_RETURN(const dataset::Manifest manifest,
                   dataset::ReadManifest(dir));
  PrintManifest(manifest, out);
  return absl::OkStatus();
}

absl::Status RunVerify(const std::string& dir, std::ostream& out) {
  ASSIGN_OR_RETURN(const std::unique_ptr<dataset::Dataset> data,
                   dataset::Dataset::Open(dir));
  RETURN_IF_ERROR(data->Verify());
  const dataset::Manifest& manifest = data->manifest();
  out << "OK " << dir << ": " << manifest.num_examples() << " examples in "
      << manifest.shards.size() << " shards, fingerprint "
      << dataset::FingerprintHex(manifest.Fingerprint()) << "\n";
  return absl::OkStatus();
}

absl::Status RunSample(const SampleCommand& command, std::ostream& out) {
  ASSIGN_OR_RETURN(const std::vector<int64_t> shard_sizes,
                   SampleShardSizes(command));
  if (command.window_shards < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--window: must be >= 1 shard (or 0 for a global shuffle), got ",
        command.window_shards));
  }
  ASSIGN_OR_RETURN(const std::unique_ptr<sampler::StreamSampler> stream,
                   sampler::StreamSampler::Create(
                       shard_sizes, {.seed = command.seed,
                                     .window_shards = command.window_shards}));
  const int64_t n = stream->examples_per_epoch();

  if (command.global_batch.has_value()) {
    ASSIGN_OR_RETURN(const sampler::PositionRange range,
                     sampler::RankPositions(*command.global_batch, command.step,
                                            command.world, command.rank));
    return PrintPositions(*stream, range.begin, range.size(), out);
  }
  if (command.epoch < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--epoch: must be >= 0, got ", command.epoch));
  }
  const int64_t count = command.count.value_or(n - command.start);
  if (command.start < 0 || command.start > n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--start: must be in [0, examples=", n, "], got ", command.start));
  }
  if (count < 0 || command.start + count > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("--count: start + count must stay within the epoch's ", n,
                     " examples, got start=", command.start, " count=", count));
  }
  return PrintPositions(*stream, command.epoch * n + command.start, count, out);
}

}  // namespace podtrain::cli
