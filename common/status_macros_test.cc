#include "common/status_macros.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace podtrain {
namespace {

absl::Status FailIf(bool fail) {
  return fail ? absl::DataLossError("bad checksum") : absl::OkStatus();
}

absl::Status TwoSteps(bool fail_first, bool fail_second, int* reached) {
  RETURN_IF_ERROR(FailIf(fail_first));
  *reached = 1;
  RETURN_IF_ERROR(FailIf(fail_second));
  *reached = 2;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, ReturnIfErrorStopsAtTheFirstError) {
  int reached = 0;
  EXPECT_TRUE(TwoSteps(false, false, &reached).ok());
  EXPECT_EQ(reached, 2);

  reached = 0;
  absl::Status status = TwoSteps(false, true, &reached);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(reached, 1);

  reached = 0;
  EXPECT_FALSE(TwoSteps(true, false, &reached).ok());
  EXPECT_EQ(reached, 0);
}

absl::StatusOr<std::unique_ptr<int>> MakeInt(int value) {
  if (value < 0) return absl::InvalidArgumentError("negative");
  return std::make_unique<int>(value);
}

absl::StatusOr<int> Sum(int a, int b) {
  // Move-only values and declarations on the left both work, twice per scope.
  ASSIGN_OR_RETURN(std::unique_ptr<int> x, MakeInt(a));
  ASSIGN_OR_RETURN(auto y, MakeInt(b));
  return *x + *y;
}

TEST(StatusMacrosTest, AssignOrReturnMovesValuesAndPropagatesErrors) {
  absl::StatusOr<int> ok = Sum(2, 3);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 5);

  absl::StatusOr<int> bad = Sum(2, -1);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "negative");
}

TEST(StatusMacrosTest, WithContextPrefixesTheMessageAndKeepsTheCode) {
  absl::Status status =
      WithContext(absl::DataLossError("record 7: bad checksum"), "shard-3.rec");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), "shard-3.rec: record 7: bad checksum");
  EXPECT_TRUE(WithContext(absl::OkStatus(), "ignored").ok());
}

}  // namespace
}  // namespace podtrain
