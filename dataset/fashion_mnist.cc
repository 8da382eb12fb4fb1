#include "dataset/fashion_mnist.h"

#include <errno.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "dataset/example.h"
#include "dataset/file_util.h"
#include "dataset/record_shard.h"

namespace podtrain::dataset {
namespace {

// IDX magic numbers: 0x0000 (two zero bytes), 0x08 (unsigned byte data), and
// the number of dimensions.
constexpr uint32_t kIdxImagesMagic = 2051;  // 0x00000803: 3 dimensions
constexpr uint32_t kIdxLabelsMagic = 2049;  // 0x00000801: 1 dimension
constexpr int32_t kMaxShards = 100000;
constexpr Schema kFashionMnistSchema{kFashionMnistRows, kFashionMnistCols, 1,
                                     kFashionMnistClasses};

// A gzip file read through zlib, with errors that name it.
class GzFile {
 public:
  static absl::StatusOr<std::unique_ptr<GzFile>> Open(const std::string& path) {
    errno = 0;
    const gzFile file = gzopen(path.c_str(), "rb");
    if (file == nullptr) {
      return PosixError("cannot open", path, errno != 0 ? errno : ENOMEM);
    }
    gzbuffer(file, 1 << 17);
    return std::unique_ptr<GzFile>(new GzFile(path, file));
  }

  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  ~GzFile() { gzclose(file_); }

  const std::string& path() const { return path_; }

  // Reads exactly `size` bytes of `what`; DATA_LOSS if the file ends first
  // or its compressed data is damaged.
  absl::Status ReadExactly(char* buffer, unsigned size,
                           absl::string_view what) {
    const int got = gzread(file_, buffer, size);
    if (got == static_cast<int>(size)) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(
        path_, ": cannot read ", what, ": ",
        got < 0 ? "" : absl::StrCat("got ", got, " of ", size, " bytes; "),
        ZlibError(), " (truncated or corrupt?)"));
  }

  absl::StatusOr<uint32_t> ReadBigEndianU32(absl::string_view what) {
    unsigned char bytes[4];
    RETURN_IF_ERROR(ReadExactly(reinterpret_cast<char*>(bytes), 4, what));
    return uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 |
           uint32_t{bytes[2]} << 8 | uint32_t{bytes[3]};
  }

  // OK if the file ends right after what was read, with a complete gzip
  // stream; INVALID_ARGUMENT if more data follows.
  absl::Status ExpectEnd(absl::string_view what) {
    char extra;
    const int got = gzread(file_, &extra, 1);
    if (got > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": has data after ", what, "; is the header's count wrong?"));
    }
    // At the end of the input gzread returns what it has, also when the
    // stream stops before its trailer (CRC-32 and length); only gzerror
    // tells the two apart (Z_BUF_ERROR: the file ended mid-stream).
    int code = Z_OK;
    gzerror(file_, &code);
    if (got == 0 && code == Z_OK) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(path_, ": after ", what, ": ",
                                            ZlibError(),
                                            " (truncated or corrupt?)"));
  }

 private:
  GzFile(std::string path, gzFile file) : path_(std::move(path)), file_(file) {}

  // zlib's description of the last error. gzerror prefixes it with the
  // path, which our messages already start with, so that part is dropped.
  std::string ZlibError() {
    int code = Z_OK;
    absl::string_view message = gzerror(file_, &code);
    if (code == Z_OK) return "unexpected end of file";
    if (code == Z_ERRNO) return absl::StrCat("I/O error: ", strerror(errno));
    absl::ConsumePrefix(&message, absl::StrCat(path_, ": "));
    return absl::StrCat("zlib: ", message);
  }

  const std::string path_;
  const gzFile file_;
};

absl::Status CheckMagic(const GzFile& file, uint32_t magic, uint32_t want,
                        absl::string_view kind) {
  if (magic == want) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(file.path(), ": not an IDX ", kind,
                   " file: magic number is ", magic, ", want ", want));
}

// Reads an IDX images header; returns the number of images.
absl::StatusOr<int64_t> ReadImagesHeader(GzFile& images) {
  ASSIGN_OR_RETURN(const uint32_t magic,
                   images.ReadBigEndianU32("the IDX magic number"));
  RETURN_IF_ERROR(CheckMagic(images, magic, kIdxImagesMagic, "images"));
  ASSIGN_OR_RETURN(const uint32_t count,
                   images.ReadBigEndianU32("the image count"));
  ASSIGN_OR_RETURN(const uint32_t rows, images.ReadBigEndianU32("the rows"));
  ASSIGN_OR_RETURN(const uint32_t cols, images.ReadBigEndianU32("the columns"));
  if (rows != kFashionMnistRows || cols != kFashionMnistCols) {
    return absl::InvalidArgumentError(
        absl::StrCat(images.path(), ": images are ", rows, "x", cols,
                     "; Fashion-MNIST images are ", kFashionMnistRows, "x",
                     kFashionMnistCols));
  }
  return count;
}

// Reads an IDX labels header; returns the number of labels.
absl::StatusOr<int64_t> ReadLabelsHeader(GzFile& labels) {
  ASSIGN_OR_RETURN(const uint32_t magic,
                   labels.ReadBigEndianU32("the IDX magic number"));
  RETURN_IF_ERROR(CheckMagic(labels, magic, kIdxLabelsMagic, "labels"));
  ASSIGN_OR_RETURN(const uint32_t count,
                   labels.ReadBigEndianU32("the label count"));
  return count;
}

// One split: a pair of IDX files and the dataset they become.
struct Split {
  std::string images_path;
  std::string labels_path;
  std::string out_dir;
  std::string name;
};

// Reads the next example from the open IDX pair.
absl::StatusOr<Example> ReadExample(GzFile& images, GzFile& labels,
                                    int64_t index) {
  Example example;
  example.pixels.resize(PixelCount(kFashionMnistSchema));
  RETURN_IF_ERROR(images.ReadExactly(example.pixels.data(),
                                     example.pixels.size(),
                                     absl::StrCat("image ", index)));
  char label;
  RETURN_IF_ERROR(labels.ReadExactly(&label, 1, absl::StrCat("label ", index)));
  example.label = static_cast<uint8_t>(label);
  if (example.label >= kFashionMnistClasses) {
    return absl::InvalidArgumentError(absl::StrCat(
        labels.path(), ": label ", example.label, " of example ", index,
        " is not a Fashion-MNIST class (0-", kFashionMnistClasses - 1, ")"));
  }
  return example;
}

// Writes the next `records` examples of the IDX pair as one shard.
absl::StatusOr<ShardInfo> WriteShard(GzFile& images, GzFile& labels,
                                     int64_t first_index, int64_t records,
                                     const std::string& out_dir,
                                     const std::string& file_name) {
  ASSIGN_OR_RETURN(std::unique_ptr<RecordShardWriter> writer,
                   RecordShardWriter::Create(JoinPath(out_dir, file_name)));
  for (int64_t i = first_index; i < first_index + records; ++i) {
    ASSIGN_OR_RETURN(const Example example, ReadExample(images, labels, i));
    RETURN_IF_ERROR(writer->Append(EncodeExample(example)));
  }
  ASSIGN_OR_RETURN(const ShardSummary summary, writer->Finish());
  return ShardInfo{file_name, summary.records, summary.digest, summary.bytes};
}

// Removes the shard files `previous` listed that `current` does not (left
// over from an ingest with another shard count). Best effort: a file that
// cannot be removed is only logged, as the new dataset is already complete.
void RemoveStaleShards(const std::string& dir, const Manifest& previous,
                       const Manifest& current) {
  absl::flat_hash_set<std::string> live;
  for (const ShardInfo& shard : current.shards) live.insert(shard.path);
  for (const ShardInfo& shard : previous.shards) {
    if (shard.path.empty() || live.contains(shard.path)) continue;
    const std::string path = JoinPath(dir, shard.path);
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      LOG(WARNING) << PosixError("cannot remove stale shard", path, errno);
    }
  }
}

absl::StatusOr<Manifest> IngestSplit(const Split& split, int32_t num_shards) {
  ASSIGN_OR_RETURN(std::unique_ptr<GzFile> images,
                   GzFile::Open(split.images_path));
  ASSIGN_OR_RETURN(std::unique_ptr<GzFile> labels,
                   GzFile::Open(split.labels_path));
  ASSIGN_OR_RETURN(const int64_t num_images, ReadImagesHeader(*images));
  ASSIGN_OR_RETURN(const int64_t num_labels, ReadLabelsHeader(*labels));
  if (num_images != num_labels) {
    return absl::InvalidArgumentError(
        absl::StrCat(split.images_path, " holds ", num_images, " images but ",
                     split.labels_path, " holds ", num_labels, " labels"));
  }

  RETURN_IF_ERROR(CreateDirectories(split.out_dir));
  // Read before it is replaced, to clean up after it (see RemoveStaleShards).
  const absl::StatusOr<Manifest> previous = ReadManifest(split.out_dir);

  Manifest manifest;
  manifest.name = split.name;
  manifest.schema = kFashionMnistSchema;
  int64_t next_index = 0;
  for (const int64_t records : EqualShardSizes(num_images, num_shards)) {
    const int64_t shard = manifest.shards.size();
    ASSIGN_OR_RETURN(
        ShardInfo info,
        WriteShard(*images, *labels, next_index, records, split.out_dir,
                   ShardFileName(shard, num_shards)));
    manifest.shards.push_back(std::move(info));
    next_index += records;
  }
  const std::string all = absl::StrCat("the ", num_images, " examples");
  RETURN_IF_ERROR(images->ExpectEnd(all));
  RETURN_IF_ERROR(labels->ExpectEnd(all));

  RETURN_IF_ERROR(WriteManifest(split.out_dir, manifest));
  if (previous.ok()) RemoveStaleShards(split.out_dir, *previous, manifest);
  LOG(INFO) << "Ingested " << num_images << " examples into " << num_shards
            << " shards in " << split.out_dir << " (fingerprint "
            << FingerprintHex(manifest.Fingerprint()) << ")";
  return manifest;
}

Split MakeSplit(const IngestOptions& options, absl::string_view idx_prefix,
                absl::string_view split_name) {
  return Split{JoinPath(options.source_dir,
                        absl::StrCat(idx_prefix, "-images-idx3-ubyte.gz")),
               JoinPath(options.source_dir,
                        absl::StrCat(idx_prefix, "-labels-idx1-ubyte.gz")),
               JoinPath(options.out_dir, split_name),
               absl::StrCat("fashion-mnist-", split_name)};
}

}  // namespace

absl::StatusOr<std::pair<Manifest, Manifest>> IngestFashionMnist(
    const IngestOptions& options) {
  if (options.out_dir.empty()) {
    return absl::InvalidArgumentError("IngestOptions.out_dir is empty");
  }
  if (options.num_shards < 1 || options.num_shards > kMaxShards) {
    return absl::InvalidArgumentError(
        absl::StrCat("IngestOptions.num_shards must be in [1, ", kMaxShards,
                     "], got ", options.num_shards));
  }
  ASSIGN_OR_RETURN(
      Manifest train,
      IngestSplit(MakeSplit(options, "train", "train"), options.num_shards));
  ASSIGN_OR_RETURN(
      Manifest test,
      IngestSplit(MakeSplit(options, "t10k", "test"), options.num_shards));
  return std::make_pair(std::move(train), std::move(test));
}

}  // namespace podtrain::dataset
