#include "dataset/fashion_mnist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataset/dataset.h"
#include "dataset/example.h"
#include "dataset/file_util.h"
#include "dataset/test_util.h"

namespace podtrain::dataset {
namespace {

using ::podtrain::dataset::testing::NewTempDir;
using ::podtrain::dataset::testing::ReadFileOrDie;
using ::podtrain::dataset::testing::WriteFileOrDie;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kDebianDir[] = "/usr/share/datasets/fashion-mnist";
constexpr int kImageBytes = 28 * 28;

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

// The decompressed contents of a .gz file, read independently of the code
// under test.
std::string Gunzip(const std::string& path) {
  const gzFile file = gzopen(path.c_str(), "rb");
  EXPECT_NE(file, nullptr) << path;
  std::string contents;
  char chunk[1 << 16];
  int n;
  while ((n = gzread(file, chunk, sizeof(chunk))) > 0)
    contents.append(chunk, n);
  EXPECT_EQ(n, 0) << path;
  gzclose(file);
  return contents;
}

void Gzip(const std::string& path, const std::string& contents) {
  const gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, contents.data(), contents.size()),
            static_cast<int>(contents.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

std::string BigEndian(uint32_t value) {
  return std::string{char(value >> 24), char(value >> 16), char(value >> 8),
                     char(value)};
}

// An IDX images file of `count` images of rows x cols, image i filled with
// byte i.
std::string IdxImages(int count, uint32_t magic = 2051, uint32_t rows = 28,
                      uint32_t cols = 28) {
  std::string out =
      BigEndian(magic) + BigEndian(count) + BigEndian(rows) + BigEndian(cols);
  for (int i = 0; i < count; ++i) out += std::string(rows * cols, char(i));
  return out;
}

std::string IdxLabels(const std::vector<int>& labels, uint32_t magic = 2049) {
  std::string out = BigEndian(magic) + BigEndian(labels.size());
  for (const int label : labels) out.push_back(char(label));
  return out;
}

// A source directory holding tiny train and t10k IDX pairs.
struct TinySource {
  std::string dir = NewTempDir("tiny-source");
  std::string train_images = JoinPath(dir, "train-images-idx3-ubyte.gz");
  std::string train_labels = JoinPath(dir, "train-labels-idx1-ubyte.gz");

  TinySource() {
    Gzip(train_images, IdxImages(5));
    Gzip(train_labels, IdxLabels({3, 1, 4, 1, 5}));
    Gzip(JoinPath(dir, "t10k-images-idx3-ubyte.gz"), IdxImages(2));
    Gzip(JoinPath(dir, "t10k-labels-idx1-ubyte.gz"), IdxLabels({9, 2}));
  }

  absl::Status Ingest(int32_t num_shards = 2) const {
    return IngestFashionMnist(Options(num_shards)).status();
  }
  IngestOptions Options(int32_t num_shards) const {
    IngestOptions options;
    options.source_dir = dir;
    options.out_dir = JoinPath(dir, "out");
    options.num_shards = num_shards;
    return options;
  }
};

// ---- The real Debian files, ingested once for the suite ----

class RealFashionMnistTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    out_dir_ = new std::string(NewTempDir("fashion-mnist"));
    IngestOptions options;
    options.out_dir = *out_dir_;
    options.num_shards = 3;
    absl::StatusOr<std::pair<Manifest, Manifest>> manifests =
        IngestFashionMnist(options);
    ASSERT_TRUE(manifests.ok())
        << manifests.status() << " (is the Debian package "
        << "dataset-fashion-mnist installed at " << kDebianDir << "?)";
    manifests_ = new std::pair<Manifest, Manifest>(*std::move(manifests));
  }
  static void TearDownTestSuite() {
    delete manifests_;
    delete out_dir_;
  }

  void SetUp() override { ASSERT_NE(manifests_, nullptr); }

  static std::string* out_dir_;
  static std::pair<Manifest, Manifest>* manifests_;
};

std::string* RealFashionMnistTest::out_dir_ = nullptr;
std::pair<Manifest, Manifest>* RealFashionMnistTest::manifests_ = nullptr;

TEST_F(RealFashionMnistTest, HasTheRightCountsAndNearEqualShards) {
  const Manifest& train = manifests_->first;
  const Manifest& test = manifests_->second;
  EXPECT_EQ(train.name, "fashion-mnist-train");
  EXPECT_EQ(test.name, "fashion-mnist-test");
  EXPECT_EQ(train.num_examples(), 60000);
  EXPECT_EQ(test.num_examples(), 10000);
  EXPECT_THAT(train.ShardSizes(), ElementsAre(20000, 20000, 20000));
  EXPECT_THAT(test.ShardSizes(), ElementsAre(3334, 3333, 3333));
  EXPECT_TRUE(train.schema == (Schema{28, 28, 1, 10}));
  EXPECT_FALSE(train.synthetic);
  EXPECT_EQ(train.shards[1].path, "shard-00001-of-00003.rec");
  EXPECT_TRUE(Exists(JoinPath(*out_dir_, "train/shard-00002-of-00003.rec")));
  EXPECT_TRUE(Exists(JoinPath(*out_dir_, "test/MANIFEST")));
}

TEST_F(RealFashionMnistTest, ManifestsOnDiskMatchTheReturnedOnes) {
  absl::StatusOr<Manifest> train = ReadManifest(JoinPath(*out_dir_, "train"));
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_TRUE(*train == manifests_->first);
  absl::StatusOr<Manifest> test = ReadManifest(JoinPath(*out_dir_, "test"));
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_TRUE(*test == manifests_->second);
}

TEST_F(RealFashionMnistTest, DatasetsOpenAndVerify) {
  for (const char* split : {"train", "test"}) {
    absl::StatusOr<std::unique_ptr<Dataset>> dataset =
        Dataset::Open(JoinPath(*out_dir_, split));
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    int64_t verified = 0;
    const absl::Status status = (*dataset)->Verify(
        [&](int64_t, int64_t records) { verified += records; });
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_EQ(verified, (*dataset)->num_examples());
  }
}

TEST_F(RealFashionMnistTest, ExamplesMatchTheIdxFiles) {
  const std::string labels =
      Gunzip(JoinPath(kDebianDir, "train-labels-idx1-ubyte.gz")).substr(8);
  const std::string images =
      Gunzip(JoinPath(kDebianDir, "train-images-idx3-ubyte.gz")).substr(16);
  ASSERT_EQ(labels.size(), 60000u);
  ASSERT_EQ(images.size(), 60000u * kImageBytes);
  // Fashion-MNIST's first training image is an ankle boot (class 9).
  EXPECT_EQ(labels[0], 9);

  absl::StatusOr<std::unique_ptr<Dataset>> train =
      Dataset::Open(JoinPath(*out_dir_, "train"));
  ASSERT_TRUE(train.ok()) << train.status();
  // The first and last ids, and both sides of each shard boundary.
  for (const int64_t id : {0, 1, 19999, 20000, 39999, 40000, 59999}) {
    absl::StatusOr<Example> example = (*train)->Read(id);
    ASSERT_TRUE(example.ok()) << example.status();
    EXPECT_EQ(example->label, labels[id]) << id;
    EXPECT_EQ(example->pixels, images.substr(id * kImageBytes, kImageBytes))
        << id;
  }
  EXPECT_EQ((*train)->Read(0)->label, 9);
}

TEST_F(RealFashionMnistTest, TestSplitComesFromTheT10kFiles) {
  const std::string labels =
      Gunzip(JoinPath(kDebianDir, "t10k-labels-idx1-ubyte.gz")).substr(8);
  absl::StatusOr<std::unique_ptr<Dataset>> test =
      Dataset::Open(JoinPath(*out_dir_, "test"));
  ASSERT_TRUE(test.ok()) << test.status();
  for (const int64_t id : {0, 3333, 3334, 9999}) {
    EXPECT_EQ((*test)->Read(id)->label, labels[id]) << id;
  }
}

// ---- Hand-written IDX files ----

TEST(FashionMnistIngestTest, TinyFilesRoundTrip) {
  const TinySource source;
  absl::StatusOr<std::pair<Manifest, Manifest>> manifests =
      IngestFashionMnist(source.Options(2));
  ASSERT_TRUE(manifests.ok()) << manifests.status();
  EXPECT_THAT(manifests->first.ShardSizes(), ElementsAre(3, 2));
  EXPECT_THAT(manifests->second.ShardSizes(), ElementsAre(1, 1));

  absl::StatusOr<std::unique_ptr<Dataset>> train =
      Dataset::Open(JoinPath(source.dir, "out/train"));
  ASSERT_TRUE(train.ok()) << train.status();
  const std::vector<int> labels = {3, 1, 4, 1, 5};
  for (int id = 0; id < 5; ++id) {
    absl::StatusOr<Example> example = (*train)->Read(id);
    ASSERT_TRUE(example.ok()) << example.status();
    EXPECT_EQ(example->label, labels[id]);
    EXPECT_EQ(example->pixels, std::string(kImageBytes, char(id)));
  }
}

TEST(FashionMnistIngestTest, ReingestIsDeterministicAndRemovesStaleShards) {
  const TinySource source;
  absl::StatusOr<std::pair<Manifest, Manifest>> first =
      IngestFashionMnist(source.Options(2));
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string train_dir = JoinPath(source.dir, "out/train");
  const std::string shard0 = JoinPath(train_dir, "shard-00000-of-00002.rec");
  const std::string bytes = ReadFileOrDie(shard0);

  absl::StatusOr<std::pair<Manifest, Manifest>> again =
      IngestFashionMnist(source.Options(2));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->first.Fingerprint(), first->first.Fingerprint());
  EXPECT_EQ(ReadFileOrDie(shard0), bytes);

  ASSERT_TRUE(source.Ingest(3).ok());
  EXPECT_FALSE(Exists(shard0));
  EXPECT_TRUE(Exists(JoinPath(train_dir, "shard-00000-of-00003.rec")));
  absl::StatusOr<std::unique_ptr<Dataset>> train = Dataset::Open(train_dir);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_TRUE((*train)->Verify().ok());
}

void ExpectIngestError(const TinySource& source, absl::StatusCode code,
                       const std::vector<std::string>& message_parts) {
  const absl::Status status = source.Ingest();
  EXPECT_EQ(status.code(), code) << status;
  // zlib's own copy of the path is dropped from its messages.
  EXPECT_THAT(std::string(status.message()),
              ::testing::Not(HasSubstr("zlib: /")));
  for (const std::string& part : message_parts) {
    EXPECT_THAT(std::string(status.message()), HasSubstr(part));
  }
  EXPECT_FALSE(Exists(JoinPath(source.dir, "out/train/MANIFEST")));
}

TEST(FashionMnistIngestTest, BadImagesMagicIsNamed) {
  const TinySource source;
  Gzip(source.train_images, IdxImages(5, /*magic=*/2049));
  ExpectIngestError(source, absl::StatusCode::kInvalidArgument,
                    {source.train_images, "not an IDX images file",
                     "magic number is 2049, want 2051"});
}

TEST(FashionMnistIngestTest, BadLabelsMagicIsNamed) {
  const TinySource source;
  Gzip(source.train_labels, IdxLabels({3, 1, 4, 1, 5}, /*magic=*/2051));
  ExpectIngestError(source, absl::StatusCode::kInvalidArgument,
                    {source.train_labels, "magic number is 2051, want 2049"});
}

TEST(FashionMnistIngestTest, MismatchedCountsNameBothFiles) {
  const TinySource source;
  Gzip(source.train_labels, IdxLabels({3, 1, 4, 1}));
  ExpectIngestError(
      source, absl::StatusCode::kInvalidArgument,
      {source.train_images, "5 images", source.train_labels, "4 labels"});
}

TEST(FashionMnistIngestTest, WrongDimensionsAreNamed) {
  const TinySource source;
  Gzip(source.train_images, IdxImages(5, 2051, /*rows=*/27, /*cols=*/28));
  ExpectIngestError(source, absl::StatusCode::kInvalidArgument,
                    {source.train_images, "images are 27x28"});
}

TEST(FashionMnistIngestTest, LabelOutOfRangeIsNamed) {
  const TinySource source;
  Gzip(source.train_labels, IdxLabels({3, 1, 10, 1, 5}));
  ExpectIngestError(source, absl::StatusCode::kInvalidArgument,
                    {source.train_labels, "label 10 of example 2"});
}

TEST(FashionMnistIngestTest, TruncatedGzipIsDataLoss) {
  const TinySource source;
  const std::string compressed = ReadFileOrDie(source.train_images);
  // Cut in the middle of the compressed data, and inside the gzip trailer
  // (the last 8 bytes: CRC-32 and size) after all the data.
  for (const size_t size : {compressed.size() / 2, compressed.size() - 4}) {
    WriteFileOrDie(source.train_images, compressed.substr(0, size));
    ExpectIngestError(source, absl::StatusCode::kDataLoss,
                      {source.train_images, "truncated"});
  }
}

TEST(FashionMnistIngestTest, HeaderCountShorterThanTheDataIsNamed) {
  const TinySource source;
  std::string images = IdxImages(5);
  images.replace(4, 4, BigEndian(4));  // claims 4 images, holds 5
  Gzip(source.train_images, images);
  Gzip(source.train_labels, IdxLabels({3, 1, 4, 1}));
  ExpectIngestError(source, absl::StatusCode::kInvalidArgument,
                    {source.train_images, "has data after the 4 examples"});
}

TEST(FashionMnistIngestTest, MissingSourceIsNotFound) {
  const TinySource source;
  ASSERT_EQ(unlink(source.train_labels.c_str()), 0);
  ExpectIngestError(source, absl::StatusCode::kNotFound,
                    {source.train_labels, "No such file"});
}

TEST(FashionMnistIngestTest, BadOptionsAreRejected) {
  const TinySource source;
  IngestOptions options = source.Options(0);
  EXPECT_EQ(IngestFashionMnist(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = source.Options(2);
  options.out_dir = "";
  EXPECT_EQ(IngestFashionMnist(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace podtrain::dataset
