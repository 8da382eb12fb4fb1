// The shared-memory all-reduce for real: ranks as threads of this process
// meeting through a real coordinator's store (each rank maps the segment
// on its own, as separate processes do), plus one rank in a child process
// that is SIGKILLed mid-run, to show a dead peer is noticed promptly. The
// child is this test binary again, started with PODTRAIN_SHM_CHILD_STORE
// set (see main()).

#include "worker/shm_communicator.h"

#include <dirent.h>
#include <gloo/rendezvous/file_store.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/collectives_test_util.h"
#include "worker/gloo_communicator.h"

extern char** environ;

namespace podtrain::worker {
namespace {

using testing::RunRanks;
using testing::TestCoordinator;

constexpr int64_t kSlotBytes = 64 << 10;  // small: many chunks per tensor

torch::Tensor RankInput(int64_t elements, int rank,
                        torch::ScalarType dtype = torch::kFloat32) {
  return (torch::remainder(torch::arange(elements, torch::kInt64), 1000) *
          (rank + 1))
      .to(dtype);
}

// Forms a world of `size` ranks (threads): Gloo first, then shared memory
// on top, exactly as the agent does.
std::vector<std::unique_ptr<Communicator>> SharedWorld(
    TestCoordinator& coordinator, int size, int64_t generation = 1,
    int64_t slot_bytes = kSlotBytes, absl::Duration timeout = absl::Seconds(30),
    int64_t buffer_bytes = 0) {
  std::vector<std::unique_ptr<Communicator>> world(size);
  std::vector<absl::Status> errors(size);
  RunRanks(size, [&](int rank) {
    CommunicatorOptions options;
    options.rank = rank;
    options.world_size = size;
    options.store_prefix = coordinator.store_prefix(generation);
    options.timeout = timeout;
    auto store = coordinator.NewStore(timeout, generation);
    auto gloo = ConnectGloo(options, store);
    if (!gloo.ok()) {
      errors[rank] = gloo.status();
      return;
    }
    SharedMemoryOptions shm;
    shm.slot_bytes = slot_bytes;
    shm.buffer_bytes = buffer_bytes;
    auto shared = ConnectSharedMemory(options, shm, store, *std::move(gloo));
    if (!shared.ok()) {
      errors[rank] = shared.status();
      return;
    }
    world[rank] = *std::move(shared);
  });
  for (int rank = 0; rank < size; ++rank) {
    EXPECT_TRUE(errors[rank].ok()) << "rank " << rank << ": " << errors[rank];
  }
  if (!errors[0].ok()) return {};
  return world;
}

// The /dev/shm entries this process created.
std::vector<std::string> OwnSegments() {
  std::vector<std::string> names;
  const std::string prefix = absl::StrCat("podtrain-", getpid(), "-");
  if (DIR* dir = opendir("/dev/shm")) {
    while (dirent* entry = readdir(dir)) {
      if (absl::StartsWith(entry->d_name, prefix)) {
        names.push_back(entry->d_name);
      }
    }
    closedir(dir);
  }
  return names;
}

class SharedMemoryCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto coordinator = TestCoordinator::Start();
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
  }

  std::unique_ptr<TestCoordinator> coordinator_;
};

TEST_F(SharedMemoryCommunicatorTest, SumsEveryDtypeAndSizeAcrossThreeRanks) {
  auto world = SharedWorld(*coordinator_, 3);
  ASSERT_EQ(world.size(), 3u);
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_TRUE(UsesSharedMemory(*world[rank])) << rank;
  }
  // Sizes around the edges: fewer elements than ranks, uneven sub-ranges,
  // exactly one slot, one element more, many chunks.
  const int64_t slot_floats = kSlotBytes / 4;
  for (const torch::ScalarType dtype :
       {torch::kFloat32, torch::kFloat64, torch::kInt32, torch::kInt64}) {
    for (const int64_t elements :
         {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{1001}, slot_floats,
          slot_floats + 1, 7 * slot_floats + 333}) {
      std::vector<torch::Tensor> tensors(3);
      std::vector<absl::Status> results(3);
      RunRanks(3, [&](int rank) {
        tensors[rank] = RankInput(elements, rank, dtype);
        results[rank] = world[rank]->AllReduceSum(tensors[rank]);
      });
      const torch::Tensor expected = RankInput(elements, 0, dtype) * 6;
      for (int rank = 0; rank < 3; ++rank) {
        ASSERT_TRUE(results[rank].ok()) << results[rank];
        EXPECT_TRUE(torch::equal(tensors[rank], expected))
            << "rank " << rank << ", " << elements << " elements of "
            << c10::toString(dtype);
      }
    }
  }
  EXPECT_TRUE(OwnSegments().empty())
      << "segment left in /dev/shm: " << OwnSegments().front();
}

TEST_F(SharedMemoryCommunicatorTest, EveryRankGetsTheSameBits) {
  // Random floats: a sum whose result depends on the order of additions.
  // Each element is summed by one rank and copied to all, so all agree.
  auto world = SharedWorld(*coordinator_, 3);
  ASSERT_EQ(world.size(), 3u);
  // Drawn here: torch's generator is shared by the rank threads.
  std::vector<torch::Tensor> tensors(3);
  torch::Tensor sum = torch::zeros({100'003});
  for (int rank = 0; rank < 3; ++rank) {
    tensors[rank] = torch::randn({100'003}) * 1e4;
    sum += tensors[rank];
  }
  std::vector<absl::Status> results(3);
  RunRanks(3, [&](int rank) {
    results[rank] = world[rank]->AllReduceSum(tensors[rank]);
  });
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(tensors[rank], tensors[0])) << rank;
  }
  EXPECT_TRUE(torch::allclose(tensors[0], sum, 1e-5, 1e-2));
}

TEST_F(SharedMemoryCommunicatorTest, NonContiguousTensorsAndManyOperations) {
  auto world = SharedWorld(*coordinator_, 2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<absl::Status> results(2);
  std::vector<torch::Tensor> columns(2);
  RunRanks(2, [&](int rank) {
    // A column of a matrix: strided, reduced through a contiguous copy.
    torch::Tensor matrix = RankInput(300 * 7, rank).reshape({300, 7});
    columns[rank] = matrix.select(1, 3);
    for (int i = 0; i < 50 && results[rank].ok(); ++i) {
      torch::Tensor scalar = torch::tensor({static_cast<float>(rank + i)});
      results[rank] = world[rank]->AllReduceSum(scalar);
      if (results[rank].ok() && scalar.item<float>() != 2 * i + 1) {
        results[rank] = absl::InternalError("wrong scalar sum");
      }
    }
    if (results[rank].ok()) {
      results[rank] = world[rank]->AllReduceSum(columns[rank]);
    }
  });
  const torch::Tensor expected =
      (RankInput(300 * 7, 0) * 3).reshape({300, 7}).select(1, 3);
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(columns[rank], expected)) << rank;
  }
}

TEST_F(SharedMemoryCommunicatorTest, BroadcastAndBarrierGoThroughGloo) {
  auto world = SharedWorld(*coordinator_, 2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<absl::Status> results(2);
  std::vector<torch::Tensor> tensors(2);
  RunRanks(2, [&](int rank) {
    tensors[rank] = RankInput(5000, rank, torch::kInt64);
    results[rank] = world[rank]->Broadcast(tensors[rank], /*root=*/1);
    if (results[rank].ok()) results[rank] = world[rank]->Barrier();
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(tensors[rank], RankInput(5000, 1, torch::kInt64)));
  }
  torch::Tensor half = torch::ones({4}, torch::kFloat16);
  EXPECT_EQ(world[0]->AllReduceSum(half).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SharedMemoryCommunicatorTest, AbortReleasesTheWaiterAndFailsThePeer) {
  auto world = SharedWorld(*coordinator_, 2);
  ASSERT_EQ(world.size(), 2u);
  // Rank 0 waits for a rank 1 that never comes; Abort() from another
  // thread releases it at once, and rank 1's next operation fails too.
  absl::Status result;
  absl::Duration took;
  std::thread waiter([&] {
    torch::Tensor tensor = RankInput(100'000, 0);
    const absl::Time start = absl::Now();
    result = world[0]->AllReduceSum(tensor);
    took = absl::Now() - start;
  });
  absl::SleepFor(absl::Milliseconds(200));
  world[0]->Abort();
  waiter.join();
  EXPECT_EQ(result.code(), absl::StatusCode::kAborted) << result;
  EXPECT_LT(took, absl::Seconds(5));
  torch::Tensor tensor = RankInput(100'000, 1);
  const absl::Time start = absl::Now();
  const absl::Status peer = world[1]->AllReduceSum(tensor);
  EXPECT_EQ(peer.code(), absl::StatusCode::kUnavailable) << peer;
  EXPECT_TRUE(absl::StrContains(peer.message(), "rank 0")) << peer;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Broken for good, with the same error.
  EXPECT_EQ(world[1]->AllReduceSum(tensor), peer);
  EXPECT_EQ(world[0]->Barrier().code(), absl::StatusCode::kAborted);
}

TEST_F(SharedMemoryCommunicatorTest, APeerThatNeverArrivesTimesOut) {
  auto world = SharedWorld(*coordinator_, 2, /*generation=*/1, kSlotBytes,
                           absl::Milliseconds(300));
  ASSERT_EQ(world.size(), 2u);
  torch::Tensor tensor = RankInput(1000, 0);
  const absl::Status status = world[0]->AllReduceSum(tensor);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
}

TEST_F(SharedMemoryCommunicatorTest, FallsBackToGlooWhenNoSegmentCanBeMade) {
  // 1 TiB slots: /dev/shm cannot reserve them, so rank 0 announces no
  // segment and every rank keeps Gloo.
  auto world =
      SharedWorld(*coordinator_, 2, /*generation=*/1, int64_t{1} << 40);
  ASSERT_EQ(world.size(), 2u);
  std::vector<absl::Status> results(2);
  std::vector<torch::Tensor> tensors(2);
  RunRanks(2, [&](int rank) {
    EXPECT_FALSE(UsesSharedMemory(*world[rank]));
    tensors[rank] = RankInput(1001, rank);
    results[rank] = world[rank]->AllReduceSum(tensors[rank]);
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(tensors[rank], RankInput(1001, 0) * 3));
  }
  EXPECT_TRUE(OwnSegments().empty());
}

// Fills a reduce buffer with `values` (same numel).
void Fill(torch::Tensor& buffer, const torch::Tensor& values) {
  torch::NoGradGuard no_grad;
  buffer.copy_(values);
}

TEST_F(SharedMemoryCommunicatorTest, ReduceBuffersSumInPlaceOnEveryRank) {
  constexpr int kRanks = 3;
  constexpr int64_t kBufferBytes = 2 << 20;
  auto world = SharedWorld(*coordinator_, kRanks, /*generation=*/1, kSlotBytes,
                           absl::Seconds(30), kBufferBytes);
  ASSERT_EQ(world.size(), 3u);
  // Random floats (drawn here: torch's generator is shared by the rank
  // threads), so a sum depends on the order of additions; plus integers,
  // sizes around the sub-range edges, and one buffer too big for the
  // region, which gets ordinary memory and the slot path.
  struct Case {
    int64_t elements;
    torch::ScalarType dtype;
  };
  const std::vector<Case> cases = {{100'003, torch::kFloat32},
                                   {1, torch::kFloat32},
                                   {2, torch::kInt64},
                                   {0, torch::kFloat32},
                                   {70'001, torch::kFloat64},
                                   {7 * kSlotBytes / 4 + 5, torch::kInt32},
                                   {kBufferBytes, torch::kFloat32}};
  std::vector<std::vector<torch::Tensor>> inputs(kRanks);
  for (int rank = 0; rank < kRanks; ++rank) {
    for (const Case& c : cases) {
      inputs[rank].push_back(
          c.dtype == torch::kFloat32 || c.dtype == torch::kFloat64
              ? (torch::randn({c.elements}) * 1e4).to(c.dtype)
              : RankInput(c.elements, rank, c.dtype));
    }
  }
  std::vector<std::vector<torch::Tensor>> buffers(kRanks);
  std::vector<absl::Status> results(kRanks);
  RunRanks(kRanks, [&](int rank) {
    for (size_t i = 0; i < cases.size(); ++i) {
      buffers[rank].push_back(world[rank]->NewReduceBuffer(
          cases[i].elements, torch::TensorOptions().dtype(cases[i].dtype)));
      EXPECT_EQ(buffers[rank][i].count_nonzero().item<int64_t>(), 0);
      Fill(buffers[rank][i], inputs[rank][i]);
    }
    // Twice, with an ordinary tensor in between: the two paths interleave.
    for (int pass = 0; pass < 2 && results[rank].ok(); ++pass) {
      for (size_t i = 0; i < cases.size() && results[rank].ok(); ++i) {
        if (pass == 1) Fill(buffers[rank][i], inputs[rank][i]);
        results[rank] = world[rank]->AllReduceSum(buffers[rank][i]);
        torch::Tensor plain = RankInput(1001, rank);
        if (results[rank].ok()) {
          results[rank] = world[rank]->AllReduceSum(plain);
        }
        if (results[rank].ok() &&
            !torch::equal(plain, RankInput(1001, 0) * 6)) {
          results[rank] = absl::InternalError("ordinary tensor sum wrong");
        }
      }
    }
  });
  for (int rank = 0; rank < kRanks; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << "rank " << rank << ": " << results[rank];
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    torch::Tensor sum = torch::zeros(
        {cases[i].elements}, torch::TensorOptions().dtype(cases[i].dtype));
    for (int rank = 0; rank < kRanks; ++rank) sum += inputs[rank][i];
    for (int rank = 0; rank < kRanks; ++rank) {
      EXPECT_TRUE(torch::equal(buffers[rank][i], buffers[0][i]))
          << "rank " << rank << " case " << i << ": not the same bits";
    }
    EXPECT_TRUE(torch::allclose(buffers[0][i], sum, 1e-5, 1e-2))
        << "case " << i;
  }
  // The buffers outlive the communicators (gradients that are bucket views
  // do): the memory stays mapped until the last tensor goes.
  const torch::Tensor before = buffers[1][0].clone();
  world.clear();
  EXPECT_TRUE(torch::equal(buffers[1][0], before));
  EXPECT_TRUE(OwnSegments().empty());
}

TEST_F(SharedMemoryCommunicatorTest,
       RanksReducingDifferentTensorsFailNamingBoth) {
  auto world = SharedWorld(*coordinator_, 2, /*generation=*/1, kSlotBytes,
                           absl::Seconds(30), /*buffer_bytes=*/1 << 20);
  ASSERT_EQ(world.size(), 2u);
  // Rank 0 reduces a buffer of the region, rank 1 an ordinary tensor of
  // the same size: summing them would mix unrelated memory.
  std::vector<absl::Status> results(2);
  RunRanks(2, [&](int rank) {
    torch::Tensor tensor =
        rank == 0 ? world[rank]->NewReduceBuffer(1000, torch::kFloat32)
                  : torch::zeros({1000});
    results[rank] = world[rank]->AllReduceSum(tensor);
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(results[rank].code(), absl::StatusCode::kInternal)
        << results[rank];
    EXPECT_TRUE(absl::StrContains(results[rank].message(),
                                  "the ranks' collectives differ"))
        << results[rank];
    EXPECT_TRUE(absl::StrContains(results[rank].message(), "through the slots"))
        << results[rank];
    EXPECT_TRUE(absl::StrContains(results[rank].message(), "at offset 0"))
        << results[rank];
  }
  // Broken for good.
  torch::Tensor again = torch::zeros({10});
  EXPECT_EQ(world[0]->AllReduceSum(again), results[0]);
}

TEST_F(SharedMemoryCommunicatorTest, RanksReducingDifferentSizesFail) {
  auto world = SharedWorld(*coordinator_, 2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<absl::Status> results(2);
  RunRanks(2, [&](int rank) {
    torch::Tensor tensor = torch::zeros({rank == 0 ? 100 : 200});
    results[rank] = world[rank]->AllReduceSum(tensor);
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(results[rank].code(), absl::StatusCode::kInternal)
        << results[rank];
    EXPECT_TRUE(absl::StrContains(results[rank].message(), "400 bytes"))
        << results[rank];
    EXPECT_TRUE(absl::StrContains(results[rank].message(), "800 bytes"))
        << results[rank];
  }
}

TEST_F(SharedMemoryCommunicatorTest,
       WithoutRoomForBuffersEveryTensorTakesSlots) {
  // 1 TiB of buffers a rank: /dev/shm cannot hold them, so the segment is
  // made without; NewReduceBuffer hands out ordinary memory, and sums are
  // still right.
  auto world = SharedWorld(*coordinator_, 2, /*generation=*/1, kSlotBytes,
                           absl::Seconds(30), int64_t{1} << 40);
  ASSERT_EQ(world.size(), 2u);
  std::vector<absl::Status> results(2);
  std::vector<torch::Tensor> tensors(2);
  RunRanks(2, [&](int rank) {
    EXPECT_TRUE(UsesSharedMemory(*world[rank]));
    tensors[rank] = world[rank]->NewReduceBuffer(5000, torch::kFloat32);
    Fill(tensors[rank], RankInput(5000, rank));
    results[rank] = world[rank]->AllReduceSum(tensors[rank]);
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(tensors[rank], RankInput(5000, 0) * 3));
  }
}

TEST_F(SharedMemoryCommunicatorTest, RejectsBadOptions) {
  CommunicatorOptions options;
  auto gloo = ConnectGloo(options, nullptr);
  ASSERT_TRUE(gloo.ok());
  SharedMemoryOptions shm;
  shm.slot_bytes = 1000;
  EXPECT_EQ(ConnectSharedMemory(options, shm, nullptr, *std::move(gloo))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  gloo = ConnectGloo(options, nullptr);
  ASSERT_TRUE(gloo.ok());
  shm = SharedMemoryOptions();
  shm.buffer_bytes = 1000;
  const absl::Status unaligned =
      ConnectSharedMemory(options, shm, nullptr, *std::move(gloo)).status();
  EXPECT_EQ(unaligned.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(unaligned.message(), "buffer_bytes"))
      << unaligned;
  options.world_size = 2;
  EXPECT_EQ(ConnectSharedMemory(options, {}, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Both ranks of a world of two, in two processes: Gloo and the segment
// formed through a FileStore in `dir`.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectThroughFiles(
    const std::string& dir, int rank) {
  CommunicatorOptions options;
  options.rank = rank;
  options.world_size = 2;
  options.timeout = absl::Seconds(30);
  auto store = std::make_shared<gloo::rendezvous::FileStore>(dir);
  auto gloo = ConnectGloo(options, store);
  if (!gloo.ok()) return gloo.status();
  return ConnectSharedMemory(options, {}, store, *std::move(gloo));
}

TEST(SharedMemoryCommunicatorProcessTest, AKilledPeerIsNoticedPromptly) {
  const std::string dir =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/store-", getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
  env_strings.push_back("PODTRAIN_SHM_CHILD_STORE=" + dir);
  std::vector<char*> env;
  for (std::string& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  char self[] = "/proc/self/exe";
  char* argv[] = {self, nullptr};
  pid_t child = 0;
  ASSERT_EQ(posix_spawn(&child, self, nullptr, nullptr, argv, env.data()), 0);

  auto communicator = ConnectThroughFiles(dir, 0);
  ASSERT_TRUE(communicator.ok()) << communicator.status();
  ASSERT_TRUE(UsesSharedMemory(**communicator));
  torch::Tensor first = RankInput(300'000, 0);
  ASSERT_TRUE((*communicator)->AllReduceSum(first).ok());
  EXPECT_TRUE(torch::equal(first, RankInput(300'000, 0) * 3));
  // The child SIGKILLs itself after the first all-reduce; the second waits
  // for it and must notice its death long before the 30 s timeout.
  torch::Tensor second = RankInput(300'000, 0);
  const absl::Time start = absl::Now();
  const absl::Status status = (*communicator)->AllReduceSum(second);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "rank 1's process exited"))
      << status;
  EXPECT_LT(took, absl::Seconds(3));
  int wait_status = 0;
  ASSERT_EQ(waitpid(child, &wait_status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL)
      << "child exit status " << wait_status;
}

// The child's side: rank 1, one all-reduce, then death without a word.
int RunChild(const std::string& dir) {
  auto communicator = ConnectThroughFiles(dir, 1);
  if (!communicator.ok() || !UsesSharedMemory(**communicator)) return 2;
  torch::Tensor first = RankInput(300'000, 1);
  if (!(*communicator)->AllReduceSum(first).ok()) return 3;
  raise(SIGKILL);
  return 4;
}

}  // namespace
}  // namespace podtrain::worker

int main(int argc, char** argv) {
  if (const char* dir = std::getenv("PODTRAIN_SHM_CHILD_STORE")) {
    return podtrain::worker::RunChild(dir);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
