#include "dataset/file_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "dataset/test_util.h"

namespace podtrain::dataset {
namespace {

using ::podtrain::dataset::testing::NewTempDir;
using ::testing::HasSubstr;

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

TEST(FileUtilTest, JoinPathAddsExactlyOneSlash) {
  EXPECT_EQ(JoinPath("/data", "MANIFEST"), "/data/MANIFEST");
  EXPECT_EQ(JoinPath("/data/", "MANIFEST"), "/data/MANIFEST");
  EXPECT_EQ(JoinPath("", "MANIFEST"), "MANIFEST");
}

TEST(FileUtilTest, WriteFileAtomicallyReplacesAndLeavesNoTempFile) {
  const std::string dir = NewTempDir("atomic");
  const std::string path = JoinPath(dir, "f");
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  absl::StatusOr<std::string> contents = ReadFileToString(path);
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(*contents, "second");
  EXPECT_FALSE(Exists(TempPathFor(path)));
}

TEST(FileUtilTest, LargeAppendsBypassingTheBufferKeepTheirOrder) {
  const std::string dir = NewTempDir("large");
  const std::string path = JoinPath(dir, "f");
  absl::StatusOr<std::unique_ptr<WritableFile>> file =
      WritableFile::Create(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string big(3 << 20, 'b');
  ASSERT_TRUE((*file)->Append("a").ok());
  ASSERT_TRUE((*file)->Append(big).ok());
  ASSERT_TRUE((*file)->Append("c").ok());
  EXPECT_EQ((*file)->size(), static_cast<int64_t>(big.size() + 2));
  ASSERT_TRUE((*file)->SyncAndClose().ok());
  EXPECT_EQ(*ReadFileToString(path), "a" + big + "c");
}

TEST(FileUtilTest, ErrorsNameThePathAndTheReason) {
  const absl::Status status =
      WriteFileAtomically("/nonexistent-podtrain-dir/f", "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("/nonexistent-podtrain-dir/f.tmp"));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("No such file or directory"));

  const absl::StatusOr<std::string> missing =
      ReadFileToString("/nonexistent-podtrain-dir/g");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(FileUtilTest, FullDiskIsResourceExhaustedAndSticky) {
  absl::StatusOr<std::unique_ptr<WritableFile>> file =
      WritableFile::Create("/dev/full");
  ASSERT_TRUE(file.ok()) << file.status();
  // Bigger than the buffer, so the write reaches the device now.
  absl::Status status = (*file)->Append(std::string(2 << 20, 'x'));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("No space left"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("/dev/full"));
  EXPECT_EQ((*file)->Append("y"), status);
  EXPECT_EQ((*file)->SyncAndClose(), status);
}

TEST(FileUtilTest, CreateDirectoriesMakesParentsAndIsIdempotent) {
  const std::string dir = NewTempDir("mkdir");
  const std::string nested = JoinPath(dir, "a/b/c");
  ASSERT_TRUE(CreateDirectories(nested).ok());
  ASSERT_TRUE(CreateDirectories(nested).ok());
  EXPECT_TRUE(Exists(nested));

  const std::string file = JoinPath(dir, "file");
  ASSERT_TRUE(WriteFileAtomically(file, "x").ok());
  const absl::Status status = CreateDirectories(JoinPath(file, "sub"));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr(file));
}

}  // namespace
}  // namespace podtrain::dataset
