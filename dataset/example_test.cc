#include "dataset/example.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace podtrain::dataset {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr Schema kTinySchema{2, 3, 2, 10};  // 12 pixel bytes

TEST(ExampleTest, PixelCountIsTheProductOfTheDimensions) {
  EXPECT_EQ(PixelCount(kTinySchema), 12);
  EXPECT_EQ(PixelCount(Schema{28, 28, 1, 10}), 784);
  // No int32 overflow for large schemas.
  EXPECT_EQ(PixelCount(Schema{65536, 65536, 4, 10}), int64_t{1} << 34);
}

TEST(ExampleTest, EncodesLabelByteThenPixels) {
  const Example example{7, std::string("\x00\x01\xff\x80\x02\x03"
                                       "abcdef",
                                       12)};
  const std::string payload = EncodeExample(example);
  ASSERT_EQ(payload.size(), 13u);
  EXPECT_EQ(payload[0], 7);
  EXPECT_EQ(payload.substr(1), example.pixels);
}

TEST(ExampleTest, RoundTrips) {
  const Example example{9, std::string(12, '\xfe')};
  absl::StatusOr<Example> decoded =
      DecodeExample(EncodeExample(example), kTinySchema);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->label, 9);
  EXPECT_EQ(decoded->pixels, example.pixels);
}

TEST(ExampleTest, LabelsAboveOneTwentySevenAreNotSignExtended) {
  const Schema schema{1, 1, 1, 256};
  absl::StatusOr<Example> decoded =
      DecodeExample(EncodeExample(Example{200, "x"}), schema);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->label, 200);
}

TEST(ExampleTest, WrongSizeIsDataLossWithBothSizes) {
  for (const size_t size : {0, 1, 12, 14}) {
    const absl::Status status =
        DecodeExample(std::string(size, '\0'), kTinySchema).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << size;
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr(absl::StrCat("payload is ", size, " bytes")),
                      HasSubstr("2x3x2 needs 13")));
  }
}

TEST(ExampleTest, LabelOutOfRangeIsDataLoss) {
  const absl::Status status =
      DecodeExample(EncodeExample(Example{10, std::string(12, '\0')}),
                    kTinySchema)
          .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("label 10 is out of range for 10 classes"));
}

}  // namespace
}  // namespace podtrain::dataset
