#include "worker/consumption_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace podtrain::worker {
namespace {

std::string TempRoot(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

ConsumedStep Step(int64_t generation, int64_t step, int32_t rank,
                  std::vector<int64_t> ids) {
  return {generation, step, rank, 2, std::move(ids)};
}

TEST(ConsumptionLogTest, RoundTripsAndAppendsAcrossOpens) {
  const std::string path = ConsumptionLogPath(TempRoot("round"), "w0", 42);
  EXPECT_NE(path.find("/consumed/w0.42.log"), std::string::npos);
  {
    auto writer = ConsumptionLogWriter::Open(path);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(Step(1, 0, 0, {5, 1, 4000000000})).ok());
    ASSERT_TRUE((*writer)->Append(Step(1, 1, 0, {})).ok());
    ASSERT_TRUE((*writer)->Sync().ok());
  }
  {
    auto writer = ConsumptionLogWriter::Open(path);
    ASSERT_TRUE((*writer)->Append(Step(2, 1, 1, {9})).ok());
  }
  auto log = ReadConsumptionLog(path);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE(log->torn_tail);
  ASSERT_EQ(log->steps.size(), 3u);
  EXPECT_EQ(log->steps[0].ids, (std::vector<int64_t>{5, 1, 4000000000}));
  EXPECT_TRUE(log->steps[1].ids.empty());
  EXPECT_EQ(log->steps[2].generation, 2);
  EXPECT_EQ(log->steps[2].rank, 1);
  EXPECT_EQ(log->steps[2].world_size, 2);
}

TEST(ConsumptionLogTest, ATornLastRecordIsSkippedAndReported) {
  const std::string path = ConsumptionLogPath(TempRoot("torn"), "w0", 1);
  {
    auto writer = ConsumptionLogWriter::Open(path);
    ASSERT_TRUE((*writer)->Append(Step(1, 0, 0, {1, 2, 3})).ok());
    ASSERT_TRUE((*writer)->Append(Step(1, 1, 0, {4, 5, 6})).ok());
  }
  // Every truncation inside the second record: the first survives.
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  const size_t first = 8 + 28 + 24;
  ASSERT_EQ(bytes.size(), 2 * first);
  for (size_t cut = first + 1; cut < bytes.size(); cut += 5) {
    ASSERT_EQ(truncate(path.c_str(), cut), 0);
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        << bytes.substr(0, cut);
    auto log = ReadConsumptionLog(path);
    ASSERT_TRUE(log.ok()) << "cut at " << cut << ": " << log.status();
    EXPECT_TRUE(log->torn_tail) << cut;
    ASSERT_EQ(log->steps.size(), 1u) << cut;
  }
}

TEST(ConsumptionLogTest, DamageBeforeTheEndIsDataLoss) {
  const std::string path = ConsumptionLogPath(TempRoot("damaged"), "w0", 1);
  {
    auto writer = ConsumptionLogWriter::Open(path);
    ASSERT_TRUE((*writer)->Append(Step(1, 0, 0, {1, 2, 3})).ok());
    ASSERT_TRUE((*writer)->Append(Step(1, 1, 0, {4, 5, 6})).ok());
  }
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(20);
  file.put('\x7f');
  file.close();
  auto log = ReadConsumptionLog(path);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(log.status().message().find("offset 0"), std::string::npos)
      << log.status();
}

TEST(ConsumptionLogTest, AnUnwritableDirectoryIsAClearError) {
  auto writer = ConsumptionLogWriter::Open("/proc/podtrain/consumed/w.log");
  ASSERT_FALSE(writer.ok());
  EXPECT_NE(writer.status().message().find("/proc/podtrain"),
            std::string::npos);
}

}  // namespace
}  // namespace podtrain::worker
