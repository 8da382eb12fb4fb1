#include "coordinator/journal.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace podtrain::coordinator {
namespace {

std::string TempPath(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(base ? base : "/tmp") + "/" + name;
  std::remove(path.c_str());
  std::remove((path + "-wal").c_str());
  std::remove((path + "-shm").c_str());
  return path;
}

internal::Update CommitUpdate(int64_t step) {
  internal::Update update;
  update.set_time_micros(step * 1000);
  update.mutable_checkpoint_committed()->set_name("jobs/1");
  update.mutable_checkpoint_committed()->set_step(step);
  return update;
}

TEST(JournalTest, AppendsAndReadsBackInOrderAcrossReopen) {
  const std::string path = TempPath("journal.db");
  {
    auto journal = Journal::Open(path);
    ASSERT_TRUE(journal.ok()) << journal.status();
    for (int64_t step = 1; step <= 5; ++step) {
      auto seq = (*journal)->Append(CommitUpdate(step));
      ASSERT_TRUE(seq.ok()) << seq.status();
      EXPECT_EQ(*seq, step);
    }
  }
  auto reopened = Journal::Open(path);
  ASSERT_TRUE(reopened.ok());
  auto updates = (*reopened)->ReadAll();
  ASSERT_TRUE(updates.ok());
  ASSERT_EQ(updates->size(), 5u);
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ((*updates)[i].checkpoint_committed().step(), i + 1);
  }
  // Appends continue the sequence.
  EXPECT_EQ(*(*reopened)->Append(CommitUpdate(6)), 6);
}

// A process killed right after Append returns loses nothing it appended.
TEST(JournalTest, SurvivesSigkillAfterAppend) {
  const std::string path = TempPath("killed.db");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto journal = Journal::Open(path);
    if (!journal.ok()) _exit(2);
    for (int64_t step = 1; step <= 20; ++step) {
      if (!(*journal)->Append(CommitUpdate(step)).ok()) _exit(3);
    }
    kill(getpid(), SIGKILL);
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited " << WEXITSTATUS(status);
  auto journal = Journal::Open(path);
  ASSERT_TRUE(journal.ok()) << journal.status();
  auto updates = (*journal)->ReadAll();
  ASSERT_TRUE(updates.ok());
  EXPECT_EQ(updates->size(), 20u);
}

TEST(JournalTest, ACorruptDatabaseIsRefusedWithDataLoss) {
  const std::string path = TempPath("garbage.db");
  std::ofstream(path) << std::string(8192, 'x');
  auto journal = Journal::Open(path);
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kDataLoss)
      << journal.status();
  EXPECT_NE(journal.status().message().find(path), std::string::npos);
}

TEST(JournalTest, AnUpdateThatDoesNotParseIsRefusedNamingIt) {
  const std::string path = TempPath("bad-row.db");
  {
    auto journal = Journal::Open(path);
    ASSERT_TRUE(journal.ok());
    ASSERT_TRUE((*journal)->Append(CommitUpdate(1)).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "INSERT INTO updates(kind, bytes) "
                         "VALUES(5, x'ffffffff0102')",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto journal = Journal::Open(path);
  ASSERT_TRUE(journal.ok());
  auto updates = (*journal)->ReadAll();
  ASSERT_FALSE(updates.ok());
  EXPECT_EQ(updates.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(updates.status().message().find("update 2"), std::string::npos)
      << updates.status();
}

TEST(JournalTest, AnUnwritableLocationIsAClearError) {
  auto journal = Journal::Open("/nonexistent-dir/podtrain/journal.db");
  ASSERT_FALSE(journal.ok());
  EXPECT_NE(journal.status().message().find("/nonexistent-dir"),
            std::string::npos);
}

}  // namespace
}  // namespace podtrain::coordinator
