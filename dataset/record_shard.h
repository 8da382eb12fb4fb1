// The record-shard file format: a file of length-prefixed, checksummed records
// followed by an index, so that any record can be read by its number with one
// pread. Datasets are lists of shards (see manifest.h); example id g of a
// dataset is a (shard, record number) pair.
//
// Layout (all integers little-endian):
//   header   magic "PTSHARD1" (8 bytes), u32 version (= 1), u32 reserved (= 0)
//   records  for each record: u32 length, u32 crc32(payload), payload
//   index    for each record: u64 file offset of its length field
//   footer   u64 index offset, u64 record count, u64 content digest,
//            u32 crc32(index bytes), u32 version, magic "PTSHEND1" (8 bytes)
// The footer has a fixed size, so a reader finds it at the end of the file and
// from it the index. Records are contiguous: record i ends where record i+1
// (or, for the last one, the index) begins, so the index also fixes every
// record's length and a reader can check the length field against it.
//
// The content digest is FNV-1a-64 (stable_hash.h) over every record's
// (u32 length, u32 crc32) in order. It identifies a shard's contents without
// rehashing payloads; manifests record it per shard.
//
// Durability: the writer fills `<path>.tmp`, fsyncs it, renames it to `path`
// and fsyncs the directory, so after a crash `path` is either absent or whole.
//
// Thread-safety: RecordShardWriter has one writer (not thread-safe).
// RecordShardReader is immutable after Open; Read and VerifyAll may run
// concurrently from any number of threads (they use pread on a shared fd).
//
// Example:
//   ASSIGN_OR_RETURN(auto writer, RecordShardWriter::Create("/d/s-0.rec"));
//   RETURN_IF_ERROR(writer->Append("payload"));
//   ASSIGN_OR_RETURN(ShardSummary summary, writer->Finish());
//   ASSIGN_OR_RETURN(auto reader, RecordShardReader::Open("/d/s-0.rec"));
//   std::string payload;
//   RETURN_IF_ERROR(reader->Read(0, &payload));

#ifndef PODTRAIN_DATASET_RECORD_SHARD_H_
#define PODTRAIN_DATASET_RECORD_SHARD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dataset/file_util.h"
#include "dataset/stable_hash.h"

namespace podtrain::dataset {

inline constexpr char kShardMagic[] = "PTSHARD1";
inline constexpr char kShardEndMagic[] = "PTSHEND1";
inline constexpr uint32_t kShardFormatVersion = 1;
inline constexpr int64_t kShardHeaderSize = 16;
inline constexpr int64_t kShardRecordHeaderSize = 8;
inline constexpr int64_t kShardFooterSize = 40;
// Byte offset of the u32 version in the header (tests corrupt it).
inline constexpr int64_t kShardHeaderVersionOffset = 8;

// The conventional file name of shard `shard` of `num_shards`:
// "shard-00003-of-00008.rec".
std::string ShardFileName(int64_t shard, int64_t num_shards);

// zlib's CRC-32 of `data`, the checksum stored with every record.
uint32_t Crc32(absl::string_view data);

// What a finished shard holds; the manifest records the last three.
struct ShardSummary {
  std::string path;
  int64_t records = 0;
  uint64_t digest = 0;
  int64_t bytes = 0;  // size of the file
};

class RecordShardWriter {
 public:
  // Starts a shard that Finish will publish at `path`. Errors (unwritable or
  // missing directory, ...) name the file and the OS's reason.
  static absl::StatusOr<std::unique_ptr<RecordShardWriter>> Create(
      const std::string& path);

  RecordShardWriter(const RecordShardWriter&) = delete;
  RecordShardWriter& operator=(const RecordShardWriter&) = delete;
  // A writer destroyed without a successful Finish removes its temporary file
  // and leaves `path` as it was.
  ~RecordShardWriter();

  // Appends one record. A payload must be shorter than 4 GiB. After a write
  // error (e.g. ENOSPC: RESOURCE_EXHAUSTED, "No space left on device") every
  // later call returns that error.
  absl::Status Append(absl::string_view payload);

  // Writes the index and footer, fsyncs, and renames the file to `path`
  // durably. Call once; on error nothing is left under `path` or `path`.tmp.
  absl::StatusOr<ShardSummary> Finish();

  int64_t records() const { return offsets_.size(); }

 private:
  RecordShardWriter(std::string path, std::unique_ptr<WritableFile> file);
  absl::Status WriteIndexAndFooter();
  absl::StatusOr<ShardSummary> Publish();
  void DiscardTempFile();

  const std::string path_;
  std::unique_ptr<WritableFile> file_;  // writes TempPathFor(path_)
  std::vector<uint64_t> offsets_;       // of each record's length field
  Fnv1a64 digest_;
  absl::Status status_;  // first write error; sticks
  bool finished_ = false;
  bool temp_file_exists_ = true;
};

class RecordShardReader {
 public:
  // Receives each record of VerifyAll in order; a non-OK return stops it.
  using RecordVisitor =
      std::function<absl::Status(int64_t index, absl::string_view payload)>;

  // Opens `path` and validates its header, footer and index: magics, version
  // (an unknown one is UNIMPLEMENTED), the index checksum and that record
  // offsets are increasing and inside the file. Damage is DATA_LOSS naming
  // the file and what is wrong; a missing file is NOT_FOUND.
  static absl::StatusOr<std::unique_ptr<RecordShardReader>> Open(
      const std::string& path);

  RecordShardReader(const RecordShardReader&) = delete;
  RecordShardReader& operator=(const RecordShardReader&) = delete;
  ~RecordShardReader();

  const std::string& path() const { return path_; }
  int64_t num_records() const { return offsets_.size() - 1; }
  // The content digest stored in the footer.
  uint64_t digest() const { return digest_; }
  int64_t file_size() const { return file_size_; }

  // Reads record `index` into `*payload`. OUT_OF_RANGE unless
  // 0 <= index < num_records(); DATA_LOSS naming the file and the record if
  // its length field disagrees with the index, its checksum does not match or
  // the file is now shorter than it was at Open.
  absl::Status Read(int64_t index, std::string* payload) const;

  // Reads every record (checking each as Read does) and recomputes the
  // content digest, comparing it with the footer's.
  absl::Status VerifyAll() const;
  // The same, handing each record to `visit` as it goes.
  absl::Status VerifyAll(const RecordVisitor& visit) const;

 private:
  RecordShardReader(std::string path, int fd, int64_t file_size,
                    uint64_t digest, std::vector<uint64_t> offsets);
  // Read, also returning the stored checksum (which VerifyAll digests).
  absl::Status ReadRecord(int64_t index, std::string* payload,
                          uint32_t* crc) const;

  const std::string path_;
  const int fd_;
  const int64_t file_size_;
  const uint64_t digest_;
  // num_records() + 1 entries: record i spans [offsets_[i], offsets_[i + 1]);
  // the last entry is the index offset.
  const std::vector<uint64_t> offsets_;
};

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_RECORD_SHARD_H_
