#include "common/logging.h"

#include <gtest/gtest.h>

#include <string>

namespace podtrain {
namespace {

TEST(LoggingTest, LogsGoToStderrWithSeverityAndMessage) {
  InitLogging("logging_test");
  testing::internal::CaptureStderr();
  LOG(WARNING) << "shard " << 3 << " is slow";
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err[0], 'W') << err;
  EXPECT_NE(err.find("shard 3 is slow"), std::string::npos) << err;
  EXPECT_NE(err.find("logging_test.cc"), std::string::npos) << err;
}

TEST(LoggingDeathTest, CheckFailureAbortsWithTheConditionInTheMessage) {
  InitLogging("logging_test");
  const int world_size = 0;
  EXPECT_DEATH(CHECK_GT(world_size, 0) << "world must not be empty",
               "world_size > 0.*world must not be empty");
}

}  // namespace
}  // namespace podtrain
