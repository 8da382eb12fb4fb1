#include "dataset/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "dataset/file_util.h"
#include "dataset/test_util.h"

namespace podtrain::dataset {
namespace {

using ::podtrain::dataset::testing::NewTempDir;
using ::podtrain::dataset::testing::ReadFileOrDie;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

Manifest SampleManifest() {
  Manifest manifest;
  manifest.name = "fashion-mnist-train";
  manifest.schema = Schema{28, 28, 1, 10};
  manifest.shards = {
      {"shard-00000-of-00003.rec", 4, 0x0123456789abcdefULL, 3200},
      {"shard-00001-of-00003.rec", 3, 0xfedcba9876543210ULL, 2400},
      {"shard-00002-of-00003.rec", 3, 0x1ULL, 2400},
  };
  return manifest;
}

// The MANIFEST text of SampleManifest with one line replaced or removed.
std::string TextWithLine(absl::string_view prefix, absl::string_view line) {
  std::vector<std::string> lines =
      absl::StrSplit(ManifestToText(SampleManifest()), '\n');
  for (std::string& existing : lines) {
    if (absl::StartsWith(existing, prefix)) {
      existing = std::string(line);
      return absl::StrJoin(lines, "\n");
    }
  }
  ADD_FAILURE() << "no line starts with " << prefix;
  return "";
}

// 1-based line number of the first line of SampleManifest's text that starts
// with `prefix`.
int LineNumberOf(absl::string_view prefix) {
  const std::vector<std::string> lines =
      absl::StrSplit(ManifestToText(SampleManifest()), '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    if (absl::StartsWith(lines[i], prefix)) return i + 1;
  }
  ADD_FAILURE() << "no line starts with " << prefix;
  return 0;
}

TEST(ManifestTest, CountsAndSizes) {
  const Manifest manifest = SampleManifest();
  EXPECT_EQ(manifest.num_examples(), 10);
  EXPECT_THAT(manifest.ShardSizes(), ElementsAre(4, 3, 3));
}

TEST(ManifestTest, RoundTripsThroughTheDirectory) {
  const std::string dir = NewTempDir("manifest");
  const Manifest manifest = SampleManifest();
  ASSERT_TRUE(WriteManifest(dir, manifest).ok());
  absl::StatusOr<Manifest> read = ReadManifest(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, manifest);
  EXPECT_EQ(read->Fingerprint(), manifest.Fingerprint());
  struct stat info;
  EXPECT_NE(stat(TempPathFor(ManifestPath(dir)).c_str(), &info), 0);
}

TEST(ManifestTest, RoundTripsSyntheticShardsWithoutPaths) {
  Manifest manifest;
  manifest.name = "synthetic imagenet-like";  // names may contain spaces
  manifest.schema = Schema{8, 8, 3, 256};
  manifest.synthetic = true;
  manifest.shards = {{"", 5, 11, 0}, {"", 5, 12, 0}};
  absl::StatusOr<Manifest> read =
      ParseManifest(ManifestToText(manifest), "MANIFEST");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, manifest);
}

TEST(ManifestTest, TextIsHumanReadable) {
  const std::string text = ManifestToText(SampleManifest());
  EXPECT_THAT(
      text, AllOf(HasSubstr("\nformat podtrain-manifest-1\n"),
                  HasSubstr("\nname fashion-mnist-train\n"),
                  HasSubstr("\nschema height=28 width=28 channels=1 "
                            "num_classes=10\n"),
                  HasSubstr("\nsynthetic false\n"),
                  HasSubstr("\nexamples 10\n"), HasSubstr("\nshards 3\n"),
                  HasSubstr("\nshard path=shard-00001-of-00003.rec records=3 "
                            "bytes=2400 digest=fedcba9876543210\n"),
                  HasSubstr(absl::StrCat(
                      "\nfingerprint ",
                      FingerprintHex(SampleManifest().Fingerprint()), "\n"))));
}

TEST(ManifestTest, FingerprintIsPinned) {
  // Computed independently (Python): FNV-1a-64 over the format tag, name,
  // schema, synthetic flag, shard count and each shard's (path, records,
  // digest). Jobs store fingerprints, so this value must never change.
  Manifest manifest;
  manifest.name = "golden";
  manifest.schema = Schema{28, 28, 1, 10};
  manifest.shards = {{"a.rec", 3, 0x1122334455667788ULL, 100},
                     {"b.rec", 2, 0x99, 50}};
  EXPECT_EQ(FingerprintHex(manifest.Fingerprint()), "ff3286b4f8aa1602");
  // Bytes are not part of the fingerprint.
  manifest.shards[0].bytes = 101;
  EXPECT_EQ(FingerprintHex(manifest.Fingerprint()), "ff3286b4f8aa1602");
}

TEST(ManifestTest, FingerprintChangesWithEveryIdentifyingField) {
  const uint64_t base = SampleManifest().Fingerprint();
  EXPECT_EQ(SampleManifest().Fingerprint(), base);

  std::vector<Manifest> changed(8, SampleManifest());
  changed[0].shards[1].records = 4;
  changed[1].shards[2].digest = 2;
  changed[2].shards[0].path = "other.rec";
  changed[3].name = "fashion-mnist-test";
  changed[4].schema.num_classes = 11;
  changed[5].synthetic = true;
  std::swap(changed[6].shards[0], changed[6].shards[1]);
  changed[7].shards.pop_back();
  for (size_t i = 0; i < changed.size(); ++i) {
    EXPECT_NE(changed[i].Fingerprint(), base) << "change " << i;
  }
}

TEST(ManifestTest, TwoWritesGiveIdenticalFiles) {
  const std::string a = NewTempDir("manifest-a");
  const std::string b = NewTempDir("manifest-b");
  ASSERT_TRUE(WriteManifest(a, SampleManifest()).ok());
  ASSERT_TRUE(WriteManifest(b, SampleManifest()).ok());
  EXPECT_EQ(ReadFileOrDie(ManifestPath(a)), ReadFileOrDie(ManifestPath(b)));
}

TEST(ManifestTest, FingerprintHexIsSixteenLowercaseDigits) {
  EXPECT_EQ(FingerprintHex(0), "0000000000000000");
  EXPECT_EQ(FingerprintHex(0xABCDEFULL), "0000000000abcdef");
  EXPECT_EQ(FingerprintHex(~0ULL), "ffffffffffffffff");
}

TEST(ManifestTest, EqualShardSizesDifferByAtMostOne) {
  EXPECT_THAT(EqualShardSizes(10, 4), ElementsAre(3, 3, 2, 2));
  EXPECT_THAT(EqualShardSizes(9, 3), ElementsAre(3, 3, 3));
  EXPECT_THAT(EqualShardSizes(2, 4), ElementsAre(1, 1, 0, 0));
  EXPECT_THAT(EqualShardSizes(0, 2), ElementsAre(0, 0));
}

TEST(ManifestTest, CommentsBlankLinesAndCrLfAreIgnored) {
  std::string text = ManifestToText(SampleManifest());
  text = absl::StrReplaceAll(
      text, {{"\nshards", "\n\n# a comment\nshards"}, {"\n", "\r\n"}});
  absl::StatusOr<Manifest> read = ParseManifest(text, "MANIFEST");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, SampleManifest());
}

struct MalformedCase {
  std::string replaced_prefix;  // the line of the valid text to replace
  std::string line;             // what to put there
  std::string error;            // expected in the message
};

TEST(ManifestTest, MalformedLinesGiveLineNumberedErrors) {
  const std::string digest = "0123456789abcdef";
  const std::vector<MalformedCase> cases = {
      {"format", "format podtrain-manifest-9", "unsupported manifest format"},
      {"schema", "schema height=28 width=28 channels=1",
       "lacks the \"num_classes\" field"},
      {"schema", "schema height=abc width=28 channels=1 num_classes=10",
       "height \"abc\" is not a non-negative integer"},
      {"schema", "schema height=28 width=28 channels=1 num_classes=10 x=1",
       "unexpected schema field \"x=1\""},
      {"schema", "schema height=28 height=28 channels=1 num_classes=10",
       "field \"height\" appears twice"},
      {"synthetic", "synthetic maybe", "must be \"true\" or \"false\""},
      {"examples", "examples -3", "examples \"-3\" is not a non-negative"},
      {"shards", "shards many", "shards \"many\" is not a non-negative"},
      {"shard path=shard-00001",
       "shard path=shard-00001-of-00003.rec records=-5 bytes=2400 digest=" +
           digest,
       "records \"-5\" is not a non-negative integer"},
      {"shard path=shard-00001",
       "shard path=shard-00001-of-00003.rec records=3 bytes=2400 digest=xyz",
       "digest \"xyz\" is not 16 hex digits"},
      {"shard path=shard-00001",
       "shard path=shard-00001-of-00003.rec records=3 bytes=2400 digest=" +
           digest + " color=red",
       "unexpected shard field \"color=red\""},
      {"shard path=shard-00001", "bogus line", "expected a \"shard\" line"},
      {"name", "title fashion", "expected a \"name\" line"},
  };
  for (const MalformedCase& c : cases) {
    const absl::StatusOr<Manifest> result =
        ParseManifest(TextWithLine(c.replaced_prefix, c.line), "/d/MANIFEST");
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << c.line << ": " << result.status();
    EXPECT_THAT(
        std::string(result.status().message()),
        AllOf(HasSubstr(absl::StrCat(
                  "/d/MANIFEST:", LineNumberOf(c.replaced_prefix), ": ")),
              HasSubstr(c.error)))
        << c.line;
  }
}

TEST(ManifestTest, WrongExampleTotalNamesTheExamplesLine) {
  const absl::StatusOr<Manifest> result =
      ParseManifest(TextWithLine("examples", "examples 7"), "/d/MANIFEST");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              AllOf(HasSubstr(absl::StrCat(
                        "/d/MANIFEST:", LineNumberOf("examples"), ": ")),
                    HasSubstr("examples is 7 but the shards hold 10")));
}

TEST(ManifestTest, LinesAfterTheFingerprintAreRejected) {
  const std::string text = ManifestToText(SampleManifest()) + "extra\n";
  const absl::StatusOr<Manifest> result = ParseManifest(text, "/d/MANIFEST");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("unexpected line after the fingerprint"));
}

TEST(ManifestTest, TruncatedFileIsDataLoss) {
  const std::string text = ManifestToText(SampleManifest());
  // Cut after the second shard line: the third shard and the fingerprint are
  // missing.
  const size_t cut = text.find("shard path=shard-00002");
  ASSERT_NE(cut, std::string::npos);
  const absl::StatusOr<Manifest> result =
      ParseManifest(text.substr(0, cut), "/d/MANIFEST");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(result.status().message()),
              AllOf(HasSubstr("/d/MANIFEST"), HasSubstr("shard 2 of 3"),
                    HasSubstr("truncated")));
  EXPECT_EQ(ParseManifest("", "/d/MANIFEST").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ManifestTest, FingerprintMismatchIsDataLoss) {
  // A consistent-looking edit: one shard and the total both changed, but the
  // recorded fingerprint still describes the original.
  std::string text =
      TextWithLine("shard path=shard-00002",
                   "shard path=shard-00002-of-00003.rec records=4 bytes=2400 "
                   "digest=0000000000000001");
  text = absl::StrReplaceAll(text, {{"examples 10", "examples 11"}});
  const absl::StatusOr<Manifest> result = ParseManifest(text, "/d/MANIFEST");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(result.status().message()),
              AllOf(HasSubstr("/d/MANIFEST"),
                    HasSubstr("does not match the contents")));
}

TEST(ManifestTest, InvalidContentsNameTheFile) {
  const absl::StatusOr<Manifest> result = ParseManifest(
      TextWithLine("shard path=shard-00000",
                   "shard path=../escape.rec records=4 bytes=3200 "
                   "digest=0123456789abcdef"),
      "/d/MANIFEST");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              AllOf(HasSubstr("/d/MANIFEST"), HasSubstr("shard 0"),
                    HasSubstr("leaves the dataset directory")));
}

TEST(ManifestTest, UnknownDirectoryIsNotFound) {
  const std::string dir = JoinPath(NewTempDir("manifest"), "no-such-dataset");
  const absl::Status status = ReadManifest(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir));
}

TEST(ManifestTest, DirectoryWithoutManifestIsNotFound) {
  const std::string dir = NewTempDir("manifest");
  const absl::Status status = ReadManifest(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(ManifestPath(dir)));
}

TEST(ManifestTest, PassingTheManifestFileInsteadOfItsDirectoryIsExplained) {
  const std::string dir = NewTempDir("manifest");
  ASSERT_TRUE(WriteManifest(dir, SampleManifest()).ok());
  const absl::Status status = ReadManifest(ManifestPath(dir)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("not a directory"));
}

TEST(ManifestTest, WriteRejectsInvalidManifests) {
  const std::string dir = NewTempDir("manifest");
  std::vector<std::pair<Manifest, std::string>> cases;
  cases.emplace_back(SampleManifest(), "dataset name is empty");
  cases.back().first.name = "";
  cases.emplace_back(SampleManifest(), "control characters");
  cases.back().first.name = "two\nlines";
  cases.emplace_back(SampleManifest(), "height is 0");
  cases.back().first.schema.height = 0;
  cases.emplace_back(SampleManifest(), "num_classes is 300");
  cases.back().first.schema.num_classes = 300;
  cases.emplace_back(SampleManifest(), "at least one shard");
  cases.back().first.shards.clear();
  cases.emplace_back(SampleManifest(), "is listed twice");
  cases.back().first.shards[2].path = cases.back().first.shards[0].path;
  cases.emplace_back(SampleManifest(), "is absolute");
  cases.back().first.shards[1].path = "/etc/passwd";
  cases.emplace_back(SampleManifest(), "whitespace");
  cases.back().first.shards[1].path = "a b.rec";
  cases.emplace_back(SampleManifest(), "is empty");
  cases.back().first.shards[1].path = "";
  cases.emplace_back(SampleManifest(), "must be non-negative");
  cases.back().first.shards[1].records = -1;
  cases.emplace_back(SampleManifest(), "synthetic shard has no file");
  cases.back().first.synthetic = true;
  for (const auto& [manifest, error] : cases) {
    const absl::Status status = WriteManifest(dir, manifest);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << error;
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr(ManifestPath(dir)), HasSubstr(error)));
  }
  struct stat info;
  EXPECT_NE(stat(ManifestPath(dir).c_str(), &info), 0);
}

}  // namespace
}  // namespace podtrain::dataset
