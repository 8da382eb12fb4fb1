#include "dataset/record_shard.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace podtrain::dataset {
namespace {

constexpr size_t kMagicSize = 8;
static_assert(sizeof(kShardMagic) == kMagicSize + 1);
static_assert(sizeof(kShardEndMagic) == kMagicSize + 1);

// ---- Little-endian encoding ----

void PutU32(std::string* out, uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) out->push_back(value >> shift);
}

void PutU64(std::string* out, uint64_t value) {
  for (int shift = 0; shift < 64; shift += 8) out->push_back(value >> shift);
}

uint32_t GetU32(const char* in) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | uint8_t(in[i]);
  return value;
}

uint64_t GetU64(const char* in) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | uint8_t(in[i]);
  return value;
}

std::string Hex(uint64_t value) { return absl::StrFormat("0x%x", value); }

// Owns a file descriptor until release().
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// ---- Header and footer ----

struct Footer {
  uint64_t index_offset;
  uint64_t record_count;
  uint64_t digest;
  uint32_t index_crc;
  uint32_t version;
};

std::string EncodeHeader() {
  std::string header(kShardMagic, kMagicSize);
  PutU32(&header, kShardFormatVersion);
  PutU32(&header, 0);  // reserved
  return header;
}

std::string EncodeFooter(const Footer& footer) {
  std::string out;
  PutU64(&out, footer.index_offset);
  PutU64(&out, footer.record_count);
  PutU64(&out, footer.digest);
  PutU32(&out, footer.index_crc);
  PutU32(&out, footer.version);
  out.append(kShardEndMagic, kMagicSize);
  return out;
}

Footer DecodeFooter(const char* in) {
  return Footer{GetU64(in), GetU64(in + 8), GetU64(in + 16), GetU32(in + 24),
                GetU32(in + 28)};
}

absl::Status DataLoss(absl::string_view path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

absl::Status CheckVersion(absl::string_view path, uint32_t version) {
  if (version == kShardFormatVersion) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(
      path, ": record shard version ", version,
      " is not supported (this build reads version ", kShardFormatVersion,
      "); the file was written by a newer podtrain, or is corrupt"));
}

// ---- I/O ----

// Reads up to `size` bytes at `offset`, retrying short reads; returns how many
// bytes it got (fewer only at the end of the file).
absl::StatusOr<int64_t> PreadFully(int fd, absl::string_view path, char* buffer,
                                   int64_t size, int64_t offset) {
  int64_t done = 0;
  while (done < size) {
    const ssize_t n = pread(fd, buffer + done, size - done, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("cannot read", path, errno);
    }
    if (n == 0) break;
    done += n;
  }
  return done;
}

// Reads exactly `size` bytes at `offset` for the part of the file named
// `what`; running into the end of the file is DATA_LOSS.
absl::Status PreadExactly(int fd, absl::string_view path, char* buffer,
                          int64_t size, int64_t offset,
                          absl::string_view what) {
  ASSIGN_OR_RETURN(const int64_t got,
                   PreadFully(fd, path, buffer, size, offset));
  if (got == size) return absl::OkStatus();
  return DataLoss(path, absl::StrCat("file ends at byte ", offset + got,
                                     " inside the ", what, " (bytes ", offset,
                                     " to ", offset + size, "); truncated?"));
}

absl::Status CheckHeader(absl::string_view path, const char* header) {
  const absl::string_view magic(header, kMagicSize);
  if (magic != absl::string_view(kShardMagic, kMagicSize)) {
    return DataLoss(path, absl::StrCat("not a record shard: header magic is \"",
                                       absl::CHexEscape(magic), "\", want \"",
                                       kShardMagic, "\""));
  }
  RETURN_IF_ERROR(CheckVersion(path, GetU32(header + 8)));
  const uint32_t reserved = GetU32(header + 12);
  if (reserved != 0) {
    return DataLoss(path, absl::StrCat("reserved header field is ",
                                       Hex(reserved), ", want 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Footer> ParseFooter(absl::string_view path, const char* bytes,
                                   int64_t file_size) {
  const absl::string_view magic(bytes + kShardFooterSize - kMagicSize,
                                kMagicSize);
  if (magic != absl::string_view(kShardEndMagic, kMagicSize)) {
    return DataLoss(path,
                    absl::StrCat("footer magic is \"", absl::CHexEscape(magic),
                                 "\", want \"", kShardEndMagic,
                                 "\"; truncated or never finished?"));
  }
  const Footer footer = DecodeFooter(bytes);
  RETURN_IF_ERROR(CheckVersion(path, footer.version));
  // Every byte between the records and the footer belongs to the index.
  const uint64_t index_end = file_size - kShardFooterSize;
  if (footer.index_offset < kShardHeaderSize ||
      footer.index_offset > index_end ||
      footer.record_count != (index_end - footer.index_offset) / 8 ||
      (index_end - footer.index_offset) % 8 != 0) {
    return DataLoss(path, absl::StrCat("footer says ", footer.record_count,
                                       " records indexed at offset ",
                                       footer.index_offset, ", which does not ",
                                       "fit a file of ", file_size, " bytes"));
  }
  return footer;
}

// Decodes the index and checks that records tile the space between the
// header and the index: the first starts right after the header and each one
// is at least a record header long.
absl::StatusOr<std::vector<uint64_t>> ParseIndex(absl::string_view path,
                                                 absl::string_view index,
                                                 const Footer& footer) {
  const uint32_t crc = Crc32(index);
  if (crc != footer.index_crc) {
    return DataLoss(path, absl::StrCat("index checksum mismatch (footer says ",
                                       Hex(footer.index_crc), ", index hashes ",
                                       "to ", Hex(crc), ")"));
  }
  std::vector<uint64_t> offsets(footer.record_count + 1);
  for (uint64_t i = 0; i < footer.record_count; ++i) {
    offsets[i] = GetU64(index.data() + 8 * i);
  }
  offsets[footer.record_count] = footer.index_offset;
  const auto name = [&](uint64_t i) {
    return i == footer.record_count ? std::string("the index")
                                    : absl::StrCat("record ", i);
  };
  if (offsets[0] != kShardHeaderSize) {
    return DataLoss(
        path, absl::StrCat(name(0), " starts at offset ", offsets[0], ", want ",
                           kShardHeaderSize, " (right after the header)"));
  }
  for (uint64_t i = 1; i <= footer.record_count; ++i) {
    if (offsets[i] < offsets[i - 1] + kShardRecordHeaderSize) {
      return DataLoss(
          path,
          absl::StrCat(name(i), " starts at offset ", offsets[i],
                       ", inside the header of record ", i - 1, " (offset ",
                       offsets[i - 1], "); the index is corrupt"));
    }
  }
  return offsets;
}

}  // namespace

std::string ShardFileName(int64_t shard, int64_t num_shards) {
  return absl::StrFormat("shard-%05d-of-%05d.rec", shard, num_shards);
}

uint32_t Crc32(absl::string_view data) {
  return crc32_z(crc32(0L, Z_NULL, 0),
                 reinterpret_cast<const Bytef*>(data.data()), data.size());
}

// ---- RecordShardWriter ----

absl::StatusOr<std::unique_ptr<RecordShardWriter>> RecordShardWriter::Create(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                   WritableFile::Create(TempPathFor(path)));
  auto writer = std::unique_ptr<RecordShardWriter>(
      new RecordShardWriter(path, std::move(file)));
  RETURN_IF_ERROR(writer->file_->Append(EncodeHeader()));
  return writer;
}

RecordShardWriter::RecordShardWriter(std::string path,
                                     std::unique_ptr<WritableFile> file)
    : path_(std::move(path)), file_(std::move(file)) {}

RecordShardWriter::~RecordShardWriter() {
  if (temp_file_exists_) DiscardTempFile();
}

void RecordShardWriter::DiscardTempFile() {
  file_.reset();  // closes it
  unlink(TempPathFor(path_).c_str());
  temp_file_exists_ = false;
}

absl::Status RecordShardWriter::Append(absl::string_view payload) {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": Append after Finish"));
  }
  if (!status_.ok()) return status_;
  if (payload.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": record ", records(), " is ", payload.size(),
                     " bytes; records must be shorter than 4 GiB"));
  }
  const uint32_t crc = Crc32(payload);
  std::string record_header;
  PutU32(&record_header, payload.size());
  PutU32(&record_header, crc);
  offsets_.push_back(file_->size());
  digest_.AddU32(payload.size());
  digest_.AddU32(crc);
  status_ = file_->Append(record_header);
  if (status_.ok()) status_ = file_->Append(payload);
  return status_;
}

absl::StatusOr<ShardSummary> RecordShardWriter::Finish() {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": Finish called twice"));
  }
  finished_ = true;
  if (status_.ok()) status_ = WriteIndexAndFooter();
  if (status_.ok()) {
    absl::StatusOr<ShardSummary> summary = Publish();
    if (summary.ok()) return summary;
    status_ = summary.status();
  }
  DiscardTempFile();
  return status_;
}

absl::Status RecordShardWriter::WriteIndexAndFooter() {
  std::string index;
  index.reserve(8 * offsets_.size());
  for (const uint64_t offset : offsets_) PutU64(&index, offset);
  const Footer footer{static_cast<uint64_t>(file_->size()), offsets_.size(),
                      digest_.value(), Crc32(index), kShardFormatVersion};
  RETURN_IF_ERROR(file_->Append(index));
  return file_->Append(EncodeFooter(footer));
}

absl::StatusOr<ShardSummary> RecordShardWriter::Publish() {
  const int64_t bytes = file_->size();
  RETURN_IF_ERROR(file_->SyncAndClose());
  RETURN_IF_ERROR(RenameDurably(TempPathFor(path_), path_));
  temp_file_exists_ = false;
  return ShardSummary{path_, records(), digest_.value(), bytes};
}

// ---- RecordShardReader ----

absl::StatusOr<std::unique_ptr<RecordShardReader>> RecordShardReader::Open(
    const std::string& path) {
  ScopedFd scoped_fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const int fd = scoped_fd.get();
  if (fd < 0) return PosixError("cannot open record shard", path, errno);

  struct stat info;
  if (fstat(fd, &info) != 0) return PosixError("cannot stat", path, errno);
  const int64_t file_size = info.st_size;
  if (file_size < kShardHeaderSize + kShardFooterSize) {
    return DataLoss(path, absl::StrCat("file is ", file_size,
                                       " bytes, shorter than a record shard's "
                                       "header and footer (",
                                       kShardHeaderSize + kShardFooterSize,
                                       " bytes); truncated?"));
  }
  char header[kShardHeaderSize];
  RETURN_IF_ERROR(
      PreadExactly(fd, path, header, kShardHeaderSize, 0, "header"));
  RETURN_IF_ERROR(CheckHeader(path, header));

  char footer_bytes[kShardFooterSize];
  RETURN_IF_ERROR(PreadExactly(fd, path, footer_bytes, kShardFooterSize,
                               file_size - kShardFooterSize, "footer"));
  ASSIGN_OR_RETURN(const Footer footer,
                   ParseFooter(path, footer_bytes, file_size));

  std::string index(8 * footer.record_count, '\0');
  RETURN_IF_ERROR(PreadExactly(fd, path, index.data(), index.size(),
                               footer.index_offset, "index"));
  ASSIGN_OR_RETURN(std::vector<uint64_t> offsets,
                   ParseIndex(path, index, footer));

  return std::unique_ptr<RecordShardReader>(new RecordShardReader(
      path, scoped_fd.release(), file_size, footer.digest, std::move(offsets)));
}

RecordShardReader::RecordShardReader(std::string path, int fd,
                                     int64_t file_size, uint64_t digest,
                                     std::vector<uint64_t> offsets)
    : path_(std::move(path)),
      fd_(fd),
      file_size_(file_size),
      digest_(digest),
      offsets_(std::move(offsets)) {}

RecordShardReader::~RecordShardReader() { close(fd_); }

absl::Status RecordShardReader::Read(int64_t index,
                                     std::string* payload) const {
  uint32_t crc;
  return ReadRecord(index, payload, &crc);
}

absl::Status RecordShardReader::ReadRecord(int64_t index, std::string* payload,
                                           uint32_t* crc) const {
  if (index < 0 || index >= num_records()) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": record ", index,
                                              " is out of range [0, ",
                                              num_records(), ")"));
  }
  const int64_t start = offsets_[index];
  const int64_t size = offsets_[index + 1] - start;
  const int64_t expected_length = size - kShardRecordHeaderSize;
  const auto record_error = [&](absl::string_view what) {
    return DataLoss(path_, absl::StrCat("record ", index, ": ", what));
  };
  // One pread for the record header and payload; the header is then dropped.
  payload->resize(size);
  ASSIGN_OR_RETURN(const int64_t got,
                   PreadFully(fd_, path_, payload->data(), size, start));
  if (got < size) {
    return record_error(absl::StrCat(
        "file ends at byte ", start + got, ", inside the record (bytes ", start,
        " to ", start + size, "); truncated since it was opened?"));
  }
  const uint32_t length = GetU32(payload->data());
  *crc = GetU32(payload->data() + 4);
  if (length != expected_length) {
    return record_error(absl::StrCat("length field says ", length,
                                     " bytes but the index says ",
                                     expected_length));
  }
  payload->erase(0, kShardRecordHeaderSize);
  const uint32_t actual_crc = Crc32(*payload);
  if (actual_crc != *crc) {
    return record_error(absl::StrCat("payload checksum mismatch (stored ",
                                     Hex(*crc), ", payload hashes to ",
                                     Hex(actual_crc), ")"));
  }
  return absl::OkStatus();
}

absl::Status RecordShardReader::VerifyAll() const { return VerifyAll(nullptr); }

absl::Status RecordShardReader::VerifyAll(const RecordVisitor& visit) const {
  Fnv1a64 digest;
  std::string payload;
  for (int64_t i = 0; i < num_records(); ++i) {
    uint32_t crc;
    RETURN_IF_ERROR(ReadRecord(i, &payload, &crc));
    digest.AddU32(payload.size());
    digest.AddU32(crc);
    if (visit != nullptr) RETURN_IF_ERROR(visit(i, payload));
  }
  if (digest.value() != digest_) {
    return DataLoss(path_, absl::StrCat("content digest mismatch (footer says ",
                                        Hex(digest_), ", records hash to ",
                                        Hex(digest.value()), ")"));
  }
  return absl::OkStatus();
}

}  // namespace podtrain::dataset
