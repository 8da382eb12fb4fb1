#include "dataset/record_shard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataset/file_util.h"
#include "dataset/test_util.h"

namespace podtrain::dataset {
namespace {

using ::podtrain::dataset::testing::NewTempDir;
using ::podtrain::dataset::testing::ReadFileOrDie;
using ::podtrain::dataset::testing::WriteFileOrDie;
using ::testing::AllOf;
using ::testing::HasSubstr;

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

// Payloads whose contents depend on their number, so a record read from the
// wrong place cannot pass for the right one.
std::string PayloadFor(int i, size_t size) {
  std::string payload(size, '\0');
  for (size_t j = 0; j < size; ++j) payload[j] = static_cast<char>(i * 31 + j);
  return payload;
}

ShardSummary WriteShard(const std::string& path,
                        const std::vector<std::string>& payloads) {
  absl::StatusOr<std::unique_ptr<RecordShardWriter>> writer =
      RecordShardWriter::Create(path);
  EXPECT_TRUE(writer.ok()) << writer.status();
  for (const std::string& payload : payloads) {
    EXPECT_TRUE((*writer)->Append(payload).ok());
  }
  absl::StatusOr<ShardSummary> summary = (*writer)->Finish();
  EXPECT_TRUE(summary.ok()) << summary.status();
  return *summary;
}

std::vector<std::string> SmallPayloads(int count) {
  std::vector<std::string> payloads;
  for (int i = 0; i < count; ++i) payloads.push_back(PayloadFor(i, 3 + i));
  return payloads;
}

// Opens `path` and, if that works, verifies every record.
absl::Status OpenAndVerify(const std::string& path) {
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path);
  if (!reader.ok()) return reader.status();
  return (*reader)->VerifyAll();
}

class RecordShardTest : public ::testing::Test {
 protected:
  std::string dir_ = NewTempDir("record_shard");
  std::string path_ = JoinPath(dir_, "shard.rec");
};

// ---- Round trips ----

void ExpectRoundTrip(const std::string& path,
                     const std::vector<std::string>& payloads) {
  const ShardSummary summary = WriteShard(path, payloads);
  EXPECT_EQ(summary.path, path);
  EXPECT_EQ(summary.records, static_cast<int64_t>(payloads.size()));
  EXPECT_EQ(summary.bytes, static_cast<int64_t>(ReadFileOrDie(path).size()));
  EXPECT_FALSE(Exists(TempPathFor(path)));

  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->num_records(), static_cast<int64_t>(payloads.size()));
  EXPECT_EQ((*reader)->digest(), summary.digest);
  EXPECT_EQ((*reader)->file_size(), summary.bytes);
  for (size_t i = 0; i < payloads.size(); ++i) {
    std::string payload = "stale";
    ASSERT_TRUE((*reader)->Read(i, &payload).ok()) << i;
    EXPECT_EQ(payload, payloads[i]) << i;
  }
  EXPECT_TRUE((*reader)->VerifyAll().ok());
}

TEST_F(RecordShardTest, RoundTripsNoRecords) { ExpectRoundTrip(path_, {}); }

TEST_F(RecordShardTest, RoundTripsOneRecord) {
  ExpectRoundTrip(path_, {"hello"});
}

TEST_F(RecordShardTest, RoundTripsManyRecords) {
  ExpectRoundTrip(path_, SmallPayloads(1000));
}

TEST_F(RecordShardTest, RoundTripsEmptyPayloads) {
  ExpectRoundTrip(path_, {"", "x", "", ""});
}

TEST_F(RecordShardTest, RoundTripsLargePayloads) {
  // Larger than the writer's buffer, mixed with small ones.
  ExpectRoundTrip(path_, {PayloadFor(0, 3 << 20), "small",
                          PayloadFor(2, (1 << 20) + 7), ""});
}

TEST_F(RecordShardTest, ReadsInAnyOrder) {
  const std::vector<std::string> payloads = SmallPayloads(100);
  WriteShard(path_, payloads);
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string payload;
  for (int i : {99, 0, 50, 7, 98, 1, 50}) {
    ASSERT_TRUE((*reader)->Read(i, &payload).ok());
    EXPECT_EQ(payload, payloads[i]);
  }
}

TEST_F(RecordShardTest, ConcurrentReadsReturnTheRightRecords) {
  const std::vector<std::string> payloads = SmallPayloads(200);
  WriteShard(path_, payloads);
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::string payload;
      for (int round = 0; round < 20; ++round) {
        for (int i = t; i < 200; i += 3) {
          if (!(*reader)->Read(i, &payload).ok() || payload != payloads[i]) {
            ++mismatches[t];
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

TEST_F(RecordShardTest, DigestIsStableAndDependsOnContents) {
  const ShardSummary a = WriteShard(path_, {"one", "two"});
  const ShardSummary again =
      WriteShard(JoinPath(dir_, "again.rec"), {"one", "two"});
  const ShardSummary different =
      WriteShard(JoinPath(dir_, "different.rec"), {"one", "twO"});
  const ShardSummary reordered =
      WriteShard(JoinPath(dir_, "reordered.rec"), {"two", "one"});
  EXPECT_EQ(a.digest, again.digest);
  EXPECT_NE(a.digest, different.digest);
  EXPECT_NE(a.digest, reordered.digest);
  // Pinned (computed independently with Python's zlib): the digest is part of
  // the file format and of every manifest, so it must never change.
  EXPECT_EQ(a.digest, 0x562ae28188dacc59ULL) << std::hex << a.digest;
}

TEST_F(RecordShardTest, ShardFileNamesAreZeroPadded) {
  EXPECT_EQ(ShardFileName(3, 8), "shard-00003-of-00008.rec");
  EXPECT_EQ(ShardFileName(39999, 40000), "shard-39999-of-40000.rec");
}

// ---- Reader errors ----

TEST_F(RecordShardTest, OutOfRangeIndexIsOutOfRange) {
  WriteShard(path_, SmallPayloads(5));
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string payload;
  for (int64_t index : {int64_t{5}, int64_t{-1}, int64_t{1} << 40}) {
    const absl::Status status = (*reader)->Read(index, &payload);
    EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << index;
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr(path_), HasSubstr(absl::StrCat(index)),
                      HasSubstr("[0, 5)")));
  }
}

TEST_F(RecordShardTest, MissingFileIsNotFound) {
  const absl::Status status = RecordShardReader::Open(path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(path_));
}

TEST_F(RecordShardTest, FlippedPayloadByteNamesTheRecord) {
  const std::vector<std::string> payloads = SmallPayloads(10);
  WriteShard(path_, payloads);
  std::string bytes = ReadFileOrDie(path_);
  // Record 7's payload starts after the header and records 0..6.
  int64_t offset = kShardHeaderSize;
  for (int i = 0; i < 7; ++i) {
    offset += kShardRecordHeaderSize + payloads[i].size();
  }
  bytes[offset + kShardRecordHeaderSize + 2] ^= 0x40;
  WriteFileOrDie(path_, bytes);

  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string payload;
  EXPECT_TRUE((*reader)->Read(6, &payload).ok());
  EXPECT_TRUE((*reader)->Read(8, &payload).ok());
  for (const absl::Status& status :
       {(*reader)->Read(7, &payload), (*reader)->VerifyAll()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr(path_), HasSubstr("record 7"),
                      HasSubstr("checksum mismatch")));
  }
}

TEST_F(RecordShardTest, EveryTruncationIsAnErrorNotACrash) {
  WriteShard(path_, {"alpha", "", "gamma", PayloadFor(3, 100)});
  const std::string bytes = ReadFileOrDie(path_);
  const std::string truncated_path = JoinPath(dir_, "truncated.rec");
  for (size_t size = 0; size < bytes.size(); ++size) {
    WriteFileOrDie(truncated_path, bytes.substr(0, size));
    const absl::Status status = OpenAndVerify(truncated_path);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << size;
    EXPECT_THAT(std::string(status.message()), HasSubstr(truncated_path));
  }
}

TEST_F(RecordShardTest, EverySingleByteCorruptionIsDetected) {
  WriteShard(path_, {"alpha", "", "gamma", PayloadFor(3, 40)});
  const std::string bytes = ReadFileOrDie(path_);
  const std::string corrupt_path = JoinPath(dir_, "corrupt.rec");
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string corrupt = bytes;
    corrupt[i] ^= 0x01;
    WriteFileOrDie(corrupt_path, corrupt);
    const absl::Status status = OpenAndVerify(corrupt_path);
    EXPECT_FALSE(status.ok()) << "flipping byte " << i << " went unnoticed";
    EXPECT_THAT(std::string(status.message()), HasSubstr(corrupt_path));
  }
}

TEST_F(RecordShardTest, FileTruncatedAfterOpenFailsReadsCleanly) {
  const std::vector<std::string> payloads = SmallPayloads(4);
  WriteShard(path_, payloads);
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  // Keep the header and record 0 (8-byte record header + 3-byte payload).
  ASSERT_EQ(truncate(path_.c_str(), kShardHeaderSize + 8 + 3), 0);
  std::string payload;
  EXPECT_TRUE((*reader)->Read(0, &payload).ok());
  const absl::Status status = (*reader)->Read(3, &payload);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("record 3"), HasSubstr("truncated")));
}

TEST_F(RecordShardTest, BadMagicIsNotARecordShard) {
  WriteShard(path_, SmallPayloads(2));
  std::string bytes = ReadFileOrDie(path_);
  bytes.replace(0, 8, "NOTSHARD");
  WriteFileOrDie(path_, bytes);
  const absl::Status status = RecordShardReader::Open(path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(path_), HasSubstr("not a record shard"),
                    HasSubstr("NOTSHARD")));
}

TEST_F(RecordShardTest, UnknownVersionIsAClearError) {
  WriteShard(path_, SmallPayloads(2));
  std::string bytes = ReadFileOrDie(path_);
  bytes[kShardHeaderVersionOffset] = 7;
  WriteFileOrDie(path_, bytes);
  const absl::Status status = RecordShardReader::Open(path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(path_), HasSubstr("version 7"),
                    HasSubstr("reads version 1")));
}

TEST_F(RecordShardTest, CorruptIndexIsDetectedAtOpen) {
  WriteShard(path_, SmallPayloads(3));
  std::string bytes = ReadFileOrDie(path_);
  // The index is the 3 * 8 bytes just before the footer.
  bytes[bytes.size() - kShardFooterSize - 8] ^= 0x10;
  WriteFileOrDie(path_, bytes);
  const absl::Status status = RecordShardReader::Open(path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(path_), HasSubstr("index checksum mismatch")));
}

TEST_F(RecordShardTest, CorruptDigestIsDetectedByVerifyAll) {
  WriteShard(path_, SmallPayloads(3));
  std::string bytes = ReadFileOrDie(path_);
  bytes[bytes.size() - kShardFooterSize + 16] ^= 0x01;  // footer digest
  WriteFileOrDie(path_, bytes);
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const absl::Status status = (*reader)->VerifyAll();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("content digest mismatch"));
}

TEST_F(RecordShardTest, VerifyAllVisitsEveryRecordInOrderAndStopsOnError) {
  const std::vector<std::string> payloads = SmallPayloads(5);
  WriteShard(path_, payloads);
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::string> seen;
  ASSERT_TRUE((*reader)
                  ->VerifyAll([&](int64_t index, absl::string_view payload) {
                    EXPECT_EQ(index, static_cast<int64_t>(seen.size()));
                    seen.emplace_back(payload);
                    return absl::OkStatus();
                  })
                  .ok());
  EXPECT_EQ(seen, payloads);

  int visited = 0;
  const absl::Status status =
      (*reader)->VerifyAll([&](int64_t index, absl::string_view) {
        ++visited;
        return index == 2 ? absl::InvalidArgumentError("stop at 2")
                          : absl::OkStatus();
      });
  EXPECT_EQ(status, absl::InvalidArgumentError("stop at 2"));
  EXPECT_EQ(visited, 3);
}

// ---- Writer ----

TEST_F(RecordShardTest, WriterIntoMissingDirectoryFailsNamingThePath) {
  const std::string path = JoinPath(dir_, "no/such/dir/shard.rec");
  const absl::Status status = RecordShardWriter::Create(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(path), HasSubstr("No such file or directory")));
}

TEST_F(RecordShardTest, FullDiskSurfacesAsNoSpaceAndPublishesNothing) {
  // The writer fills `path`.tmp; pointing that name at /dev/full makes every
  // write fail with ENOSPC, like a full disk.
  ASSERT_EQ(symlink("/dev/full", TempPathFor(path_).c_str()), 0);
  absl::StatusOr<std::unique_ptr<RecordShardWriter>> writer =
      RecordShardWriter::Create(path_);
  ASSERT_TRUE(writer.ok()) << writer.status();
  // Writes are buffered (1 MiB), so the error shows up on the Append that
  // overflows the buffer.
  absl::Status status;
  for (int i = 0; i < 100 && status.ok(); ++i) {
    status = (*writer)->Append(PayloadFor(i, 64 << 10));
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("No space left on device"),
                    HasSubstr(TempPathFor(path_))));
  // The error sticks, and nothing is published under either name.
  EXPECT_EQ((*writer)->Append("more"), status);
  EXPECT_EQ((*writer)->Finish().status(), status);
  EXPECT_FALSE(Exists(path_));
  struct stat info;
  EXPECT_NE(lstat(TempPathFor(path_).c_str(), &info), 0);
}

TEST_F(RecordShardTest, FullDiskAtFinishSurfacesFromFinish) {
  // Small records stay in the buffer until Finish writes them out.
  ASSERT_EQ(symlink("/dev/full", TempPathFor(path_).c_str()), 0);
  absl::StatusOr<std::unique_ptr<RecordShardWriter>> writer =
      RecordShardWriter::Create(path_);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("small").ok());
  const absl::Status status = (*writer)->Finish().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("No space left on device"));
  EXPECT_FALSE(Exists(path_));
}

TEST_F(RecordShardTest, AbandonedWriterLeavesNothingBehind) {
  WriteShard(path_, {"old"});
  {
    absl::StatusOr<std::unique_ptr<RecordShardWriter>> writer =
        RecordShardWriter::Create(path_);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append("new").ok());
    EXPECT_TRUE(Exists(TempPathFor(path_)));
  }
  EXPECT_FALSE(Exists(TempPathFor(path_)));
  // The shard published earlier is untouched.
  absl::StatusOr<std::unique_ptr<RecordShardReader>> reader =
      RecordShardReader::Open(path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string payload;
  ASSERT_TRUE((*reader)->Read(0, &payload).ok());
  EXPECT_EQ(payload, "old");
}

TEST_F(RecordShardTest, AppendAfterFinishIsAnError) {
  absl::StatusOr<std::unique_ptr<RecordShardWriter>> writer =
      RecordShardWriter::Create(path_);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_EQ((*writer)->Append("late").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*writer)->Finish().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace podtrain::dataset
