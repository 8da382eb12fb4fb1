#include "worker/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <random>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "dataset/stable_hash.h"

namespace podtrain::worker {

// Tensor bytes are written as the host holds them and the format says
// little-endian; a big-endian port would have to swap every element.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the checkpoint format stores tensors little-endian");

namespace {

using dataset::JoinPath;
using dataset::PosixError;

constexpr char kTensorFileMagic[] = "PTCKTEN1";
constexpr char kManifestMagic[] = "PTCKMAN1";
constexpr size_t kMagicSize = 8;
constexpr uint32_t kFormatVersion = 1;
// magic, u32 version, u32 tensor count, u32 crc.
constexpr size_t kTensorFileHeaderSize = kMagicSize + 12;
// magic, u32 version, u32 reserved, 4 x 64-bit scalars, u64 rng length,
// u32 file count, u32 crc: the smallest possible MANIFEST.
constexpr size_t kMinManifestSize = kMagicSize + 8 + 32 + 8 + 4 + 4;

constexpr char kModelFile[] = "model.tensors";
constexpr char kOptimizerFile[] = "optimizer.tensors";
constexpr char kManifestFile[] = "MANIFEST";
constexpr char kDoneFile[] = "DONE";
constexpr char kStepPrefix[] = "step-";
constexpr char kTempPrefix[] = ".tmp-step-";

// Limits that no real state reaches; they bound what a reader allocates
// before a record's checksum has been verified.
constexpr uint32_t kMaxNameLength = 4096;
constexpr uint32_t kMaxRank = 64;

// Reads of tensor data for verification only go through a buffer this big.
constexpr size_t kVerifyChunkSize = 1 << 20;

// ---------------------------------------------------------------------------
// Dtypes. The codes are part of the file format: never renumber them (c10's
// ScalarType values are not stable across libtorch releases, so they are not
// stored).

struct DtypeInfo {
  uint32_t code;
  torch::ScalarType type;
  const char* name;
};

constexpr DtypeInfo kDtypes[] = {
    {1, torch::kFloat32, "float32"},
    {2, torch::kFloat64, "float64"},
    {3, torch::kFloat16, "float16"},
    {4, torch::kBFloat16, "bfloat16"},
    {5, torch::kInt8, "int8"},
    {6, torch::kUInt8, "uint8"},
    {7, torch::kInt16, "int16"},
    {8, torch::kInt32, "int32"},
    {9, torch::kInt64, "int64"},
    {10, torch::kBool, "bool"},
    {11, torch::kComplexFloat, "complex64"},
    {12, torch::kComplexDouble, "complex128"},
};

const DtypeInfo* DtypeByType(torch::ScalarType type) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.type == type) return &info;
  }
  return nullptr;
}

const DtypeInfo* DtypeByCode(uint32_t code) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.code == code) return &info;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Encoding.

void PutU32(std::string* out, uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) {
    out->push_back(static_cast<char>(value >> shift));
  }
}

void PutU64(std::string* out, uint64_t value) {
  for (int shift = 0; shift < 64; shift += 8) {
    out->push_back(static_cast<char>(value >> shift));
  }
}

uint32_t DecodeU32(const char* p) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i)
    value = (value << 8) | static_cast<uint8_t>(p[i]);
  return value;
}

uint64_t DecodeU64(const char* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i)
    value = (value << 8) | static_cast<uint8_t>(p[i]);
  return value;
}

// Consumes fields from the front of a byte string; every Get fails (returns
// false) rather than read past the end.
class Decoder {
 public:
  explicit Decoder(absl::string_view data) : data_(data) {}

  bool GetU32(uint32_t* value) {
    if (data_.size() < 4) return false;
    *value = DecodeU32(data_.data());
    data_.remove_prefix(4);
    return true;
  }
  bool GetU64(uint64_t* value) {
    if (data_.size() < 8) return false;
    *value = DecodeU64(data_.data());
    data_.remove_prefix(8);
    return true;
  }
  bool GetI64(int64_t* value) {
    uint64_t bits;
    if (!GetU64(&bits)) return false;
    *value = static_cast<int64_t>(bits);
    return true;
  }
  bool GetBytes(uint64_t length, std::string* value) {
    if (data_.size() < length) return false;
    value->assign(data_.data(), length);
    data_.remove_prefix(length);
    return true;
  }
  size_t remaining() const { return data_.size(); }

 private:
  absl::string_view data_;
};

// zlib's CRC-32 of nothing; also the value to extend from.
constexpr uint32_t kEmptyCrc = 0;

uint32_t ExtendCrc(uint32_t crc, const void* data, size_t size) {
  // Not only a shortcut: zlib returns its initial value, whatever `crc` is,
  // when `data` is null, as it is for an empty string_view.
  if (size == 0) return crc;
  return crc32_z(crc, static_cast<const Bytef*>(data), size);
}

uint32_t Crc(absl::string_view data) {
  return ExtendCrc(kEmptyCrc, data.data(), data.size());
}

// ---------------------------------------------------------------------------
// Names and small file-system helpers.

std::string StepDirName(int64_t step) {
  return absl::StrFormat("%s%012d", kStepPrefix, step);
}

std::string RandomSuffix() {
  std::random_device device;
  const uint64_t bits = (static_cast<uint64_t>(device()) << 32) | device();
  return absl::StrFormat("%016x", bits);
}

// A temporary directory name for `step`: `.tmp-step-<%012d>-<tag><random>`.
// The step in it lets PruneCheckpoints tell stale ones from a write in
// progress.
std::string TempDirName(int64_t step, absl::string_view tag) {
  return absl::StrFormat("%s%012d-%s%s", kTempPrefix, step, tag,
                         RandomSuffix());
}

// Parses the canonical decimal step at the front of `text` (the digits up to
// `end` or the end of text); only names this file writes are recognized.
bool ParseStepDigits(absl::string_view digits, int64_t* step) {
  if (digits.empty()) return false;
  for (const char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  if (!absl::SimpleAtoi(digits, step)) return false;
  return absl::StrFormat("%012d", *step) == digits;
}

// A `step-*` name → its step.
bool ParseStepDirName(absl::string_view name, int64_t* step) {
  if (!absl::ConsumePrefix(&name, kStepPrefix)) return false;
  return ParseStepDigits(name, step);
}

// A `.tmp-step-*` name → the step it was written for.
bool ParseTempDirName(absl::string_view name, int64_t* step) {
  if (!absl::ConsumePrefix(&name, kTempPrefix)) return false;
  const size_t dash = name.find('-');
  if (dash == absl::string_view::npos) return false;
  return ParseStepDigits(name.substr(0, dash), step);
}

std::string BaseName(absl::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? path
                                                      : path.substr(slash + 1));
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("cannot open directory", dir, errno);
  absl::Status status;
  if (fsync(fd) != 0) status = PosixError("cannot fsync directory", dir, errno);
  close(fd);
  return status;
}

// Whether `path` exists, without following a final symlink.
absl::StatusOr<bool> PathExists(const std::string& path) {
  struct stat info;
  if (lstat(path.c_str(), &info) == 0) return true;
  if (errno == ENOENT) return false;
  return PosixError("cannot stat", path, errno);
}

// Like `rm -rf path`, without following symlinks (a planted symlink is
// removed, never what it points to).
absl::Status RemoveTree(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return PosixError("cannot open directory", path, errno);
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const struct dirent* entry = readdir(dir);
    if (entry == nullptr) break;
    const absl::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  const int read_error = errno;
  closedir(dir);
  if (read_error != 0) return PosixError("cannot list", path, read_error);
  for (const std::string& name : names) {
    const std::string child = JoinPath(path, name);
    struct stat info;
    if (lstat(child.c_str(), &info) != 0) {
      return PosixError("cannot stat", child, errno);
    }
    if (S_ISDIR(info.st_mode)) {
      RETURN_IF_ERROR(RemoveTree(child));
    } else if (unlink(child.c_str()) != 0) {
      return PosixError("cannot remove", child, errno);
    }
  }
  if (rmdir(path.c_str()) != 0) return PosixError("cannot remove", path, errno);
  return absl::OkStatus();
}

// Removes a temporary directory after a failed write; the write's own error
// is what the caller reports, so a failure here is only logged.
void DiscardDirectory(const std::string& dir) {
  const absl::Status status = RemoveTree(dir);
  if (!status.ok()) LOG(WARNING) << "cannot clean up " << dir << ": " << status;
}

// ---------------------------------------------------------------------------
// Writing.

// A tensor ready to be written: validated and contiguous on the host.
struct PreparedTensor {
  std::string name;
  const DtypeInfo* dtype;
  torch::Tensor tensor;
};

// Size and content digest of one tensor file, as the MANIFEST records them.
struct FileEntry {
  std::string name;
  uint64_t size = 0;
  uint64_t digest = 0;
};

// The content digest of a tensor file: FNV-1a-64 over every checksum in it,
// in order (header, then each record's header and data). The checksums cover
// every byte, so the digest identifies the contents without another pass
// over the data. (A CRC-32 of the whole file would not: since every chunk is
// followed by its own CRC-32, the CRC of the whole file depends only on the
// chunks' lengths, so it cannot tell one checkpoint's file from another's.)
class ContentDigest {
 public:
  void Add(uint32_t crc) { hash_.AddU32(crc); }
  uint64_t value() const { return hash_.value(); }

 private:
  dataset::Fnv1a64 hash_;
};

absl::StatusOr<std::vector<PreparedTensor>> PrepareTensors(
    absl::string_view group, const std::vector<NamedTensor>& tensors) {
  std::vector<PreparedTensor> prepared;
  prepared.reserve(tensors.size());
  absl::flat_hash_set<absl::string_view> names;
  for (const NamedTensor& named : tensors) {
    const std::string what = absl::StrCat(group, " tensor '", named.name, "'");
    if (named.name.empty() || named.name.size() > kMaxNameLength) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": names must have 1 to ", kMaxNameLength, " bytes"));
    }
    if (!names.insert(named.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, " appears twice"));
    }
    if (!named.tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is undefined"));
    }
    if (named.tensor.layout() != torch::kStrided) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " is not dense (only strided tensors are saved)"));
    }
    const DtypeInfo* dtype = DtypeByType(named.tensor.scalar_type());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has unsupported dtype ",
                       c10::toString(named.tensor.scalar_type())));
    }
    if (named.tensor.dim() > static_cast<int64_t>(kMaxRank)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has more than ", kMaxRank, " dimensions"));
    }
    torch::Tensor host;
    try {
      // resolve_*: conjugate/negative views are lazy flags whose bytes do not
      // hold the values; contiguous: the format stores row-major elements.
      host = named.tensor.cpu().resolve_conj().resolve_neg().contiguous();
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat(what, ": cannot copy to host memory: ", e.what()));
    }
    prepared.push_back({named.name, dtype, std::move(host)});
  }
  return prepared;
}

absl::StatusOr<FileEntry> WriteTensorFile(
    const std::string& dir, const char* name,
    const std::vector<PreparedTensor>& tensors) {
  ASSIGN_OR_RETURN(std::unique_ptr<dataset::WritableFile> file,
                   dataset::WritableFile::Create(JoinPath(dir, name)));
  ContentDigest digest;
  std::string header(kTensorFileMagic, kMagicSize);
  PutU32(&header, kFormatVersion);
  PutU32(&header, tensors.size());
  const uint32_t header_crc = Crc(header);
  digest.Add(header_crc);
  PutU32(&header, header_crc);
  RETURN_IF_ERROR(file->Append(header));

  for (const PreparedTensor& prepared : tensors) {
    const torch::Tensor& tensor = prepared.tensor;
    const size_t data_size = tensor.nbytes();
    std::string record;
    PutU32(&record, prepared.name.size());
    record.append(prepared.name);
    PutU32(&record, prepared.dtype->code);
    PutU32(&record, tensor.dim());
    for (const int64_t size : tensor.sizes()) PutU64(&record, size);
    PutU64(&record, data_size);
    const uint32_t record_crc = Crc(record);
    digest.Add(record_crc);
    PutU32(&record, record_crc);
    RETURN_IF_ERROR(file->Append(record));

    // An empty tensor may have no storage at all: append nothing.
    const absl::string_view data =
        data_size == 0
            ? absl::string_view()
            : absl::string_view(static_cast<const char*>(tensor.data_ptr()),
                                data_size);
    RETURN_IF_ERROR(file->Append(data));
    const uint32_t data_crc = Crc(data);
    digest.Add(data_crc);
    std::string encoded_crc;
    PutU32(&encoded_crc, data_crc);
    RETURN_IF_ERROR(file->Append(encoded_crc));
  }
  RETURN_IF_ERROR(file->SyncAndClose());
  FileEntry entry;
  entry.name = name;
  entry.size = file->size();
  entry.digest = digest.value();
  return entry;
}

// The MANIFEST's bytes; its stored checksum goes to `*crc` for DONE.
std::string EncodeManifest(const CheckpointState& state,
                           const std::vector<FileEntry>& files, uint32_t* crc) {
  std::string out(kManifestMagic, kMagicSize);
  PutU32(&out, kFormatVersion);
  PutU32(&out, 0);  // reserved
  PutU64(&out, state.step);
  PutU64(&out, state.job_fingerprint);
  PutU64(&out, state.generation);
  PutU64(&out, state.next_stream_position);
  PutU64(&out, state.rng_state.size());
  out.append(state.rng_state);
  PutU32(&out, files.size());
  for (const FileEntry& file : files) {
    PutU32(&out, file.name.size());
    out.append(file.name);
    PutU64(&out, file.size);
    PutU64(&out, file.digest);
  }
  *crc = Crc(out);
  PutU32(&out, *crc);
  return out;
}

std::string DoneContents(int64_t step, uint32_t manifest_crc) {
  return absl::StrFormat("podtrain checkpoint step %d manifest %08x\n", step,
                         manifest_crc);
}

// The cursor is (step + 1) * global_batch with a fixed global batch >= 1.
bool CursorConsistent(int64_t step, int64_t next_stream_position) {
  return step >= 0 && step < std::numeric_limits<int64_t>::max() &&
         next_stream_position > 0 && next_stream_position % (step + 1) == 0;
}

absl::Status ValidateScalars(const CheckpointState& state) {
  if (state.step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot checkpoint step ", state.step,
                     ": no optimizer step has completed"));
  }
  if (!CursorConsistent(state.step, state.next_stream_position)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "next_stream_position ", state.next_stream_position,
        " is not (step + 1) * global_batch for step ", state.step));
  }
  return absl::OkStatus();
}

// Moves `dir` aside to a `.tmp-*` name (so it stops being a checkpoint at
// once, durably) and returns the new path.
absl::StatusOr<std::string> MoveAside(const std::string& root,
                                      const std::string& dir, int64_t step,
                                      absl::string_view tag) {
  const std::string aside = JoinPath(root, TempDirName(step, tag));
  RETURN_IF_ERROR(dataset::RenameDurably(dir, aside));
  return aside;
}

// Fills the temporary directory: tensor files, MANIFEST, then an fsync of the
// directory so that its entries are durable before the rename publishes it.
absl::StatusOr<std::string> FillTempDir(
    const std::string& temp_dir, const CheckpointState& state,
    const std::vector<PreparedTensor>& model,
    const std::vector<PreparedTensor>& optimizer,
    const std::function<void(internal::WritePhase, const std::string&)>& hook) {
  using internal::WritePhase;
  auto call_hook = [&](WritePhase phase) {
    if (hook) hook(phase, temp_dir);
  };
  call_hook(WritePhase::kTempDirCreated);
  std::vector<FileEntry> files;
  ASSIGN_OR_RETURN(FileEntry model_file,
                   WriteTensorFile(temp_dir, kModelFile, model));
  files.push_back(std::move(model_file));
  call_hook(WritePhase::kModelWritten);
  ASSIGN_OR_RETURN(FileEntry optimizer_file,
                   WriteTensorFile(temp_dir, kOptimizerFile, optimizer));
  files.push_back(std::move(optimizer_file));
  call_hook(WritePhase::kOptimizerWritten);

  uint32_t manifest_crc = 0;
  const std::string manifest = EncodeManifest(state, files, &manifest_crc);
  ASSIGN_OR_RETURN(
      std::unique_ptr<dataset::WritableFile> file,
      dataset::WritableFile::Create(JoinPath(temp_dir, kManifestFile)));
  RETURN_IF_ERROR(file->Append(manifest));
  RETURN_IF_ERROR(file->SyncAndClose());
  call_hook(WritePhase::kManifestWritten);

  RETURN_IF_ERROR(SyncDirectory(temp_dir));
  call_hook(WritePhase::kTempDirSynced);
  return DoneContents(state.step, manifest_crc);
}

// Makes room for the new checkpoint at `final_dir`: deletes an incomplete
// directory there, moves a complete one aside (returned, to be deleted once
// the new one is complete, or put back if it fails). "" if none.
absl::StatusOr<std::string> ClearFinalDir(const std::string& root,
                                          const std::string& final_dir,
                                          int64_t step) {
  ASSIGN_OR_RETURN(const bool exists, PathExists(final_dir));
  if (!exists) return std::string();
  ASSIGN_OR_RETURN(const bool complete,
                   PathExists(JoinPath(final_dir, kDoneFile)));
  if (complete) {
    LOG(WARNING) << "replacing checkpoint " << final_dir
                 << " (a checkpoint of the same step written earlier)";
    return MoveAside(root, final_dir, step, "replaced-");
  }
  RETURN_IF_ERROR(RemoveTree(final_dir));
  return std::string();
}

// After a failed publication: removes whatever is at `final_dir` and puts
// back the checkpoint that was moved aside, if any.
void RollBack(const std::string& final_dir, const std::string& aside) {
  const absl::StatusOr<bool> exists = PathExists(final_dir);
  if (exists.ok() && *exists) DiscardDirectory(final_dir);
  if (aside.empty()) return;
  const absl::Status status = dataset::RenameDurably(aside, final_dir);
  if (!status.ok()) {
    LOG(ERROR) << "cannot restore the replaced checkpoint " << aside << " to "
               << final_dir << ": " << status;
  }
}

absl::StatusOr<std::string> WriteCheckpointImpl(
    const std::string& root, const CheckpointState& state,
    const std::function<void(internal::WritePhase, const std::string&)>& hook) {
  if (root.empty()) {
    return absl::InvalidArgumentError("empty checkpoint root directory");
  }
  RETURN_IF_ERROR(ValidateScalars(state));
  ASSIGN_OR_RETURN(const std::vector<PreparedTensor> model,
                   PrepareTensors("model", state.model));
  ASSIGN_OR_RETURN(const std::vector<PreparedTensor> optimizer,
                   PrepareTensors("optimizer", state.optimizer));

  RETURN_IF_ERROR(dataset::CreateDirectories(root));
  const std::string temp_dir = JoinPath(root, TempDirName(state.step, ""));
  if (mkdir(temp_dir.c_str(), 0755) != 0) {
    return PosixError("cannot create directory", temp_dir, errno);
  }
  const absl::StatusOr<std::string> done_contents =
      FillTempDir(temp_dir, state, model, optimizer, hook);
  if (!done_contents.ok()) {
    DiscardDirectory(temp_dir);
    return done_contents.status();
  }

  const std::string final_dir = JoinPath(root, StepDirName(state.step));
  const absl::StatusOr<std::string> aside =
      ClearFinalDir(root, final_dir, state.step);
  if (!aside.ok()) {
    DiscardDirectory(temp_dir);
    return aside.status();
  }
  if (hook) hook(internal::WritePhase::kFinalDirCleared, final_dir);
  absl::Status status = dataset::RenameDurably(temp_dir, final_dir);
  if (!status.ok()) {
    DiscardDirectory(temp_dir);
    RollBack(final_dir, *aside);
    return status;
  }
  if (hook) hook(internal::WritePhase::kRenamed, final_dir);

  status = dataset::WriteFileAtomically(JoinPath(final_dir, kDoneFile),
                                        *done_contents);
  if (!status.ok()) {
    RollBack(final_dir, *aside);
    return status;
  }
  if (hook) hook(internal::WritePhase::kDoneWritten, final_dir);
  if (!aside->empty()) DiscardDirectory(*aside);
  return final_dir;
}

// ---------------------------------------------------------------------------
// Reading.

absl::Status Damaged(absl::string_view file, absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("checkpoint file ", file, " is damaged: ", what));
}

// A file read front to back.
class InputFile {
 public:
  // DATA_LOSS if the file is missing (it is part of a complete checkpoint).
  static absl::StatusOr<std::unique_ptr<InputFile>> Open(
      const std::string& path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return Damaged(path, "the file is missing");
      return PosixError("cannot open", path, errno);
    }
    struct stat info;
    if (fstat(fd, &info) != 0) {
      const int error_number = errno;
      close(fd);
      return PosixError("cannot stat", path, error_number);
    }
    return std::unique_ptr<InputFile>(new InputFile(path, fd, info.st_size));
  }

  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() { close(fd_); }

  // REQUIRES: size <= remaining().
  absl::Status Read(void* dst, uint64_t size) {
    char* out = static_cast<char*>(dst);
    uint64_t left = size;
    while (left > 0) {
      const size_t want = std::min<uint64_t>(left, 1 << 30);
      const ssize_t n = read(fd_, out, want);
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError("cannot read", path_, errno);
      }
      if (n == 0) return Damaged(path_, "the file shrank while being read");
      out += n;
      left -= n;
      offset_ += n;
    }
    return absl::OkStatus();
  }

  uint64_t size() const { return size_; }
  uint64_t offset() const { return offset_; }
  uint64_t remaining() const { return size_ - offset_; }

 private:
  InputFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}

  const std::string path_;
  const int fd_;
  const uint64_t size_;
  uint64_t offset_ = 0;
};

struct Manifest {
  int64_t step = 0;
  uint64_t job_fingerprint = 0;
  int64_t generation = 0;
  int64_t next_stream_position = 0;
  std::string rng_state;
  std::vector<FileEntry> files;
  uint32_t crc = 0;
};

absl::StatusOr<Manifest> ParseManifest(const std::string& path,
                                       absl::string_view contents) {
  if (contents.size() < kMinManifestSize) {
    return Damaged(path, absl::StrCat("truncated: ", contents.size(),
                                      " bytes, shorter than any MANIFEST"));
  }
  if (contents.substr(0, kMagicSize) != kManifestMagic) {
    return Damaged(path, "bad magic: not a podtrain checkpoint MANIFEST");
  }
  const absl::string_view body = contents.substr(0, contents.size() - 4);
  Manifest manifest;
  manifest.crc = DecodeU32(contents.data() + body.size());
  if (Crc(body) != manifest.crc) {
    return Damaged(path, "checksum mismatch (corrupt or truncated)");
  }
  Decoder decoder(body.substr(kMagicSize));
  uint32_t version = 0, reserved = 0;
  decoder.GetU32(&version);
  decoder.GetU32(&reserved);
  if (version != kFormatVersion) {
    return absl::UnimplementedError(
        absl::StrCat(path, " has checkpoint format version ", version,
                     "; this build reads version ", kFormatVersion));
  }
  uint64_t fingerprint = 0, rng_size = 0;
  uint32_t file_count = 0;
  // The checksum matched, so a field that does not decode means a writer
  // bug rather than damage; it is DATA_LOSS all the same.
  if (!decoder.GetI64(&manifest.step) || !decoder.GetU64(&fingerprint) ||
      !decoder.GetI64(&manifest.generation) ||
      !decoder.GetI64(&manifest.next_stream_position) ||
      !decoder.GetU64(&rng_size) ||
      !decoder.GetBytes(rng_size, &manifest.rng_state) ||
      !decoder.GetU32(&file_count)) {
    return Damaged(path, "malformed scalar state");
  }
  manifest.job_fingerprint = fingerprint;
  const std::vector<std::string> expected_files = {kModelFile, kOptimizerFile};
  if (file_count != expected_files.size()) {
    return Damaged(path, absl::StrCat("lists ", file_count, " files, not ",
                                      expected_files.size()));
  }
  for (const std::string& expected : expected_files) {
    FileEntry entry;
    uint32_t name_size = 0;
    if (!decoder.GetU32(&name_size) ||
        !decoder.GetBytes(name_size, &entry.name) ||
        !decoder.GetU64(&entry.size) || !decoder.GetU64(&entry.digest)) {
      return Damaged(path, "malformed file index");
    }
    if (entry.name != expected) {
      return Damaged(path,
                     absl::StrCat("lists file '", absl::CHexEscape(entry.name),
                                  "' where ", expected, " belongs"));
    }
    manifest.files.push_back(std::move(entry));
  }
  if (decoder.remaining() != 0) {
    return Damaged(path, absl::StrCat(decoder.remaining(),
                                      " unexpected bytes before the checksum"));
  }
  return manifest;
}

// A tensor record's header, once its checksum has matched.
struct RecordHeader {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> sizes;
  uint64_t data_size = 0;
  std::string what;  // "tensor 'name' (record i of n)", for messages
};

// Reads one tensor file front to back, checking every checksum before it
// trusts what the checksum covers, and computes its content digest. Every
// error names the file and the record or tensor.
class TensorFileReader {
 public:
  TensorFileReader(std::string path, std::unique_ptr<InputFile> file,
                   uint64_t expected_size)
      : path_(std::move(path)), file_(std::move(file)) {
    // Said with every error: a size mismatch usually explains it.
    if (file_->size() != expected_size) {
      size_note_ = absl::StrCat(" (the file has ", file_->size(),
                                " bytes; MANIFEST says ", expected_size,
                                ": truncated or overwritten)");
    }
  }

  // Reads and checks the header; returns the tensor count.
  absl::StatusOr<uint32_t> ReadHeader() {
    char header[kTensorFileHeaderSize];
    if (file_->remaining() < sizeof(header)) return EndsEarly("the header");
    RETURN_IF_ERROR(file_->Read(header, sizeof(header)));
    if (absl::string_view(header, kMagicSize) != kTensorFileMagic) {
      return FileDamaged("bad magic: not a podtrain tensor file");
    }
    const uint32_t crc = DecodeU32(header + kTensorFileHeaderSize - 4);
    if (Crc(absl::string_view(header, kTensorFileHeaderSize - 4)) != crc) {
      return FileDamaged("header checksum mismatch");
    }
    digest_.Add(crc);
    const uint32_t version = DecodeU32(header + kMagicSize);
    if (version != kFormatVersion) {
      return absl::UnimplementedError(
          absl::StrCat(path_, " has tensor file format version ", version,
                       "; this build reads version ", kFormatVersion));
    }
    count_ = DecodeU32(header + kMagicSize + 4);
    return count_;
  }

  // Reads record `index`'s header, bounding every length by the file before
  // reading what it counts, then checks it.
  absl::StatusOr<RecordHeader> ReadRecordHeader(uint32_t index) {
    // Until its checksum matches, a record's name may be garbage: place it by
    // the tensor before it.
    const std::string place = absl::StrCat("record ", index + 1, " of ", count_,
                                           " (after tensor '", previous_, "')");
    std::string bytes;
    auto read_more = [&](uint64_t size) -> absl::Status {
      if (file_->remaining() < size) return EndsEarly(place);
      const size_t start = bytes.size();
      bytes.resize(start + size);
      return file_->Read(&bytes[start], size);
    };
    RETURN_IF_ERROR(read_more(4));
    const uint32_t name_size = DecodeU32(bytes.data());
    if (name_size > kMaxNameLength) {
      return FileDamaged(
          absl::StrCat(place, ": name length ", name_size, " is impossible"));
    }
    RETURN_IF_ERROR(read_more(name_size + 8));  // name, dtype, rank
    const uint32_t rank = DecodeU32(bytes.data() + 4 + name_size + 4);
    if (rank > kMaxRank) {
      return FileDamaged(
          absl::StrCat(place, ": rank ", rank, " is impossible"));
    }
    RETURN_IF_ERROR(read_more(8 * rank + 8 + 4));  // sizes, length, crc
    const absl::string_view fields(bytes.data(), bytes.size() - 4);
    const uint32_t crc = DecodeU32(bytes.data() + fields.size());
    if (Crc(fields) != crc) {
      return FileDamaged(
          absl::StrCat(place, ": record header checksum mismatch"));
    }
    digest_.Add(crc);
    return DecodeRecordHeader(fields, index);
  }

  // Reads the record's data into `*tensor`, or (if null) only checks it.
  absl::Status ReadData(const RecordHeader& header, torch::Tensor* tensor) {
    if (file_->remaining() < 4 || file_->remaining() - 4 < header.data_size) {
      return EndsEarly(header.what);
    }
    uint32_t crc = kEmptyCrc;
    if (tensor != nullptr) {
      try {
        *tensor = torch::empty(header.sizes, torch::dtype(header.dtype->type));
      } catch (const std::exception& e) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "cannot allocate ", header.what, " of ", path_, ": ", e.what()));
      }
      if (header.data_size > 0) {
        // Straight into the tensor's memory: no second copy of the state.
        RETURN_IF_ERROR(file_->Read(tensor->data_ptr(), header.data_size));
        crc = ExtendCrc(crc, tensor->data_ptr(), header.data_size);
      }
    } else {
      std::string chunk(std::min<uint64_t>(header.data_size, kVerifyChunkSize),
                        '\0');
      for (uint64_t left = header.data_size; left > 0;) {
        const uint64_t size = std::min<uint64_t>(left, chunk.size());
        RETURN_IF_ERROR(file_->Read(&chunk[0], size));
        crc = ExtendCrc(crc, chunk.data(), size);
        left -= size;
      }
    }
    char stored[4];
    RETURN_IF_ERROR(file_->Read(stored, sizeof(stored)));
    if (crc != DecodeU32(stored)) {
      return FileDamaged(absl::StrCat(header.what, ": data checksum mismatch"));
    }
    digest_.Add(crc);
    previous_ = header.name;
    return absl::OkStatus();
  }

  // After the last record: nothing may follow, and the file must be the one
  // its MANIFEST entry describes.
  absl::Status Finish(const FileEntry& expected) {
    if (file_->remaining() != 0) {
      return FileDamaged(absl::StrCat(
          file_->remaining(), " unexpected bytes after the last tensor"));
    }
    if (file_->size() != expected.size) return FileDamaged("wrong size");
    if (digest_.value() != expected.digest) {
      return FileDamaged(
          "its content digest differs from the MANIFEST's: the file is intact "
          "but belongs to another checkpoint");
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<RecordHeader> DecodeRecordHeader(absl::string_view fields,
                                                  uint32_t index) {
    Decoder decoder(fields);
    uint32_t name_size = 0, code = 0, rank = 0;
    RecordHeader header;
    decoder.GetU32(&name_size);
    decoder.GetBytes(name_size, &header.name);
    decoder.GetU32(&code);
    decoder.GetU32(&rank);
    header.sizes.resize(rank);
    for (int64_t& size : header.sizes) decoder.GetI64(&size);
    decoder.GetU64(&header.data_size);
    header.what = absl::StrCat("tensor '", header.name, "' (record ", index + 1,
                               " of ", count_, ")");
    header.dtype = DtypeByCode(code);
    if (header.dtype == nullptr) {
      return FileDamaged(
          absl::StrCat(header.what, ": unknown dtype code ", code));
    }
    uint64_t expected_size = c10::elementSize(header.dtype->type);
    for (const int64_t size : header.sizes) {
      if (size < 0 ||
          __builtin_mul_overflow(expected_size, static_cast<uint64_t>(size),
                                 &expected_size)) {
        return FileDamaged(absl::StrCat(header.what, ": impossible shape"));
      }
    }
    if (header.data_size != expected_size) {
      return FileDamaged(
          absl::StrCat(header.what, ": ", header.data_size,
                       " data bytes do not fit its shape and dtype"));
    }
    if (!names_.insert(header.name).second) {
      return FileDamaged(absl::StrCat(header.what, ": the name appears twice"));
    }
    return header;
  }

  absl::Status FileDamaged(absl::string_view what) const {
    return Damaged(path_, absl::StrCat(what, size_note_));
  }
  absl::Status EndsEarly(absl::string_view where) const {
    return FileDamaged(
        absl::StrCat("ends at byte ", file_->size(), " inside ", where));
  }

  const std::string path_;
  const std::unique_ptr<InputFile> file_;
  std::string size_note_;
  uint32_t count_ = 0;
  ContentDigest digest_;
  std::string previous_ = "(none)";
  absl::flat_hash_set<std::string> names_;
};

// Reads (if `out` is non-null) or only verifies (if null) one tensor file
// against its MANIFEST entry.
absl::Status ReadTensorFile(const std::string& dir, const FileEntry& expected,
                            std::vector<NamedTensor>* out) {
  const std::string path = JoinPath(dir, expected.name);
  ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  TensorFileReader reader(path, std::move(file), expected.size);
  ASSIGN_OR_RETURN(const uint32_t count, reader.ReadHeader());
  for (uint32_t index = 0; index < count; ++index) {
    ASSIGN_OR_RETURN(RecordHeader header, reader.ReadRecordHeader(index));
    torch::Tensor tensor;
    RETURN_IF_ERROR(reader.ReadData(header, out ? &tensor : nullptr));
    if (out != nullptr) out->push_back({std::move(header.name), tensor});
  }
  return reader.Finish(expected);
}

// ReadCheckpoint, or (with `out` null) the same checks without keeping the
// tensors.
absl::Status LoadCheckpoint(const std::string& path,
                            uint64_t expected_fingerprint,
                            CheckpointState* out) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint ", path, " does not exist"));
    }
    return PosixError("cannot stat", path, errno);
  }
  if (!S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", path, " is not a directory"));
  }
  const std::string done_path = JoinPath(path, kDoneFile);
  ASSIGN_OR_RETURN(const bool done, PathExists(done_path));
  if (!done) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", path,
        " is incomplete: it has no DONE marker (its write did not finish)"));
  }

  const std::string manifest_path = JoinPath(path, kManifestFile);
  absl::StatusOr<std::string> contents =
      dataset::ReadFileToString(manifest_path);
  if (absl::IsNotFound(contents.status())) {
    return Damaged(manifest_path, "the file is missing");
  }
  RETURN_IF_ERROR(contents.status());
  ASSIGN_OR_RETURN(const Manifest manifest,
                   ParseManifest(manifest_path, *contents));

  ASSIGN_OR_RETURN(const std::string done_contents,
                   dataset::ReadFileToString(done_path));
  const std::string expected_done = DoneContents(manifest.step, manifest.crc);
  if (done_contents != expected_done) {
    return Damaged(
        done_path,
        absl::StrCat("it does not match the MANIFEST beside it: "
                     "expected \"",
                     absl::CHexEscape(expected_done), "\", found \"",
                     absl::CHexEscape(done_contents.substr(0, 100)), "\""));
  }
  if (manifest.job_fingerprint != expected_fingerprint) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "checkpoint %s belongs to a different job or dataset: its job "
        "fingerprint is %016x, this job's is %016x",
        path, manifest.job_fingerprint, expected_fingerprint));
  }
  if (!CursorConsistent(manifest.step, manifest.next_stream_position)) {
    return Damaged(manifest_path,
                   absl::StrCat("inconsistent state: step ", manifest.step,
                                " with next stream position ",
                                manifest.next_stream_position));
  }
  int64_t named_step = 0;
  if (ParseStepDirName(BaseName(path), &named_step) &&
      named_step != manifest.step) {
    return Damaged(
        manifest_path,
        absl::StrCat("it is for step ", manifest.step,
                     " but its directory is named for step ", named_step));
  }

  std::vector<NamedTensor>* model = out ? &out->model : nullptr;
  std::vector<NamedTensor>* optimizer = out ? &out->optimizer : nullptr;
  RETURN_IF_ERROR(ReadTensorFile(path, manifest.files[0], model));
  RETURN_IF_ERROR(ReadTensorFile(path, manifest.files[1], optimizer));
  if (out != nullptr) {
    out->step = manifest.step;
    out->job_fingerprint = manifest.job_fingerprint;
    out->generation = manifest.generation;
    out->rng_state = manifest.rng_state;
    out->next_stream_position = manifest.next_stream_position;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// The root directory.

struct RootEntry {
  enum Kind { kComplete, kIncomplete, kTemp };
  Kind kind;
  int64_t step;
  std::string path;
};

// The directories under `root` that this file names: checkpoints (with or
// without DONE) and temporary directories. Anything else is left alone.
absl::StatusOr<std::vector<RootEntry>> ScanRoot(const std::string& root) {
  DIR* dir = opendir(root.c_str());
  if (dir == nullptr) return PosixError("cannot open directory", root, errno);
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const struct dirent* entry = readdir(dir);
    if (entry == nullptr) break;
    names.emplace_back(entry->d_name);
  }
  const int read_error = errno;
  closedir(dir);
  if (read_error != 0) return PosixError("cannot list", root, read_error);

  std::vector<RootEntry> entries;
  for (const std::string& name : names) {
    RootEntry entry;
    if (ParseStepDirName(name, &entry.step)) {
      entry.kind = RootEntry::kComplete;
    } else if (ParseTempDirName(name, &entry.step)) {
      entry.kind = RootEntry::kTemp;
    } else {
      continue;
    }
    entry.path = JoinPath(root, name);
    struct stat info;
    if (lstat(entry.path.c_str(), &info) != 0) {
      if (errno == ENOENT) continue;  // removed since the listing
      return PosixError("cannot stat", entry.path, errno);
    }
    if (!S_ISDIR(info.st_mode)) continue;
    if (entry.kind == RootEntry::kComplete) {
      ASSIGN_OR_RETURN(const bool done,
                       PathExists(JoinPath(entry.path, kDoneFile)));
      if (!done) entry.kind = RootEntry::kIncomplete;
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

// Removes one directory of the root. A checkpoint is first moved to a
// `.tmp-*` name so that it stops being one atomically.
absl::Status RemoveEntry(const std::string& root, const RootEntry& entry) {
  std::string path = entry.path;
  if (entry.kind == RootEntry::kComplete) {
    ASSIGN_OR_RETURN(path, MoveAside(root, entry.path, entry.step, "pruned-"));
  }
  return RemoveTree(path);
}

}  // namespace

absl::StatusOr<std::string> WriteCheckpoint(const std::string& root,
                                            const CheckpointState& state) {
  return internal::WriteCheckpointWithHook(root, state, nullptr);
}

namespace internal {

absl::StatusOr<std::string> WriteCheckpointWithHook(
    const std::string& root, const CheckpointState& state,
    const std::function<void(WritePhase phase, const std::string& dir)>& hook) {
  absl::StatusOr<std::string> path = WriteCheckpointImpl(root, state, hook);
  if (!path.ok()) {
    return WithContext(path.status(),
                       absl::StrCat("cannot write the checkpoint of step ",
                                    state.step, " under ", root));
  }
  return path;
}

}  // namespace internal

absl::StatusOr<CheckpointState> ReadCheckpoint(const std::string& path,
                                               uint64_t expected_fingerprint) {
  CheckpointState state;
  RETURN_IF_ERROR(LoadCheckpoint(path, expected_fingerprint, &state));
  return state;
}

absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> ListCheckpoints(
    const std::string& root) {
  ASSIGN_OR_RETURN(const std::vector<RootEntry> entries, ScanRoot(root));
  std::vector<std::pair<int64_t, std::string>> checkpoints;
  for (const RootEntry& entry : entries) {
    if (entry.kind == RootEntry::kComplete) {
      checkpoints.emplace_back(entry.step, entry.path);
    }
  }
  std::sort(checkpoints.begin(), checkpoints.end());
  return checkpoints;
}

absl::Status PruneCheckpoints(const std::string& root, int keep,
                              const std::string& protect) {
  if (keep < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep must be at least 1, not ", keep));
  }
  ASSIGN_OR_RETURN(std::vector<RootEntry> entries, ScanRoot(root));
  // Compared by device and inode: the caller's spelling of the path (relative,
  // trailing slash, symlinked root) need not match ours.
  struct stat protect_info;
  const bool has_protect =
      !protect.empty() && stat(protect.c_str(), &protect_info) == 0;
  auto is_protected = [&](const RootEntry& entry) {
    struct stat info;
    return has_protect && stat(entry.path.c_str(), &info) == 0 &&
           info.st_dev == protect_info.st_dev &&
           info.st_ino == protect_info.st_ino;
  };

  // Newest first; complete checkpoints before leftovers of the same step.
  std::sort(entries.begin(), entries.end(),
            [](const RootEntry& a, const RootEntry& b) {
              if (a.step != b.step) return a.step > b.step;
              return a.kind < b.kind;
            });
  int complete_seen = 0;
  int64_t newest_complete = -1;
  absl::Status first_error;
  for (const RootEntry& entry : entries) {
    bool remove = false;
    if (entry.kind == RootEntry::kComplete) {
      if (complete_seen == 0) newest_complete = entry.step;
      remove = ++complete_seen > keep;
    } else {
      remove = complete_seen > 0 && entry.step < newest_complete;
    }
    if (!remove || is_protected(entry)) continue;
    VLOG(1) << "pruning " << entry.path;
    const absl::Status status = RemoveEntry(root, entry);
    if (!status.ok()) {
      LOG(WARNING) << "cannot prune " << entry.path << ": " << status;
      if (first_error.ok()) first_error = status;
    }
  }
  return first_error;
}

absl::StatusOr<std::string> FindLatestValidCheckpoint(
    const std::string& root, uint64_t expected_fingerprint) {
  ASSIGN_OR_RETURN(std::vector<RootEntry> entries, ScanRoot(root));
  std::sort(
      entries.begin(), entries.end(),
      [](const RootEntry& a, const RootEntry& b) { return a.step > b.step; });
  std::vector<std::string> skipped;
  for (const RootEntry& entry : entries) {
    absl::Status status;
    if (entry.kind == RootEntry::kTemp) continue;
    if (entry.kind == RootEntry::kIncomplete) {
      status = absl::FailedPreconditionError(
          absl::StrCat(entry.path, " is incomplete (no DONE marker)"));
    } else {
      status = LoadCheckpoint(entry.path, expected_fingerprint, nullptr);
      if (status.ok()) return entry.path;
      if (!absl::IsDataLoss(status)) return status;
    }
    LOG(WARNING) << "skipping checkpoint " << entry.path << ": " << status;
    skipped.push_back(std::string(status.message()));
  }
  if (skipped.empty()) {
    return absl::NotFoundError(absl::StrCat("no checkpoint under ", root));
  }
  return absl::NotFoundError(
      absl::StrCat("no valid checkpoint under ", root,
                   "; skipped: ", absl::StrJoin(skipped, "; ")));
}

}  // namespace podtrain::worker
